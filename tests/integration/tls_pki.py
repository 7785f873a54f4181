"""tls_pki: throw-away certificate authorities for the TLS tests, made with Debian's openssl CLI.

Everything lives in a directory the caller owns (a test's tmp dir): no key is ever committed."""

import hashlib
import os
import ssl
import subprocess


def _openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{p.stderr}")


def fingerprint(pem_path):
    """SHA-256 of the DER form of the first certificate in a PEM file."""
    with open(pem_path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def der_fingerprint(der):
    return hashlib.sha256(der).hexdigest()


class Pki:
    """A CA (EC P-256) in `directory`; issue() signs leaf certificates with it."""

    def __init__(self, directory, name="Test CA"):
        self.dir = directory
        self.name = name
        os.makedirs(directory, exist_ok=True)
        self.ca_key = os.path.join(directory, "ca.key")
        self.ca_cert = os.path.join(directory, "ca.crt")
        self._serial = 0x1000
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", self.ca_key, "-out", self.ca_cert, "-subj", f"/CN={name}",
                 "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)

    def issue(self, name, subject, sans=("DNS:localhost", "IP:127.0.0.1"), client=False,
              serial=None):
        """Signs a new key; returns (cert_path, key_path, serial)."""
        self._serial += 1
        serial = serial or self._serial
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        crt = os.path.join(self.dir, f"{name}.crt")
        ext = os.path.join(self.dir, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            f.write(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
            if sans:
                f.write(f"subjectAltName={','.join(sans)}\n")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", key, cwd=self.dir)
        _openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr, cwd=self.dir)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                 "-set_serial", str(serial), "-days", "2", "-extfile", ext, "-out", crt,
                 cwd=self.dir)
        return crt, key, serial
