"""test_sdk_install: an out-of-tree C-node built against the installed SDK (pkg-config and CMake)."""

import glob
import os
import shutil
import subprocess
import tempfile

import pytest

import nodex_harness as nx

# A complete C-node outside the repository: reverses binaries, on 2 workers.
CNODE_C = r'''
/* rev_cnode: {reverse, Bin} -> {ok, Reversed}; anything else -> {error, badarg}. */
#include <stdlib.h>
#include <string.h>
#include <nodex_cnode.h>

static int on_request(nodex_request *req, void *user) {
    (void)user;
    int i = req->index, arity = 0, type = 0, size = 0;
    char tag[MAXATOMLEN_UTF8];
    if (ei_decode_tuple_header(req->buf, &i, &arity) || arity != 2 ||
        ei_decode_atom(req->buf, &i, tag) || strcmp(tag, "reverse") ||
        ei_get_type(req->buf, &i, &type, &size) || type != ERL_BINARY_EXT)
        return nodex_reply_error(req, "badarg"), 0;
    char *bin = malloc(size ? (size_t)size : 1);
    long len = 0;
    ei_decode_binary(req->buf, &i, bin, &len);
    for (long a = 0, b = len - 1; a < b; a++, b--) {
        char t = bin[a]; bin[a] = bin[b]; bin[b] = t;
    }
    ei_x_buff *r = nodex_reply_begin(req);
    ei_x_encode_tuple_header(r, 2);
    ei_x_encode_atom(r, "ok");
    ei_x_encode_binary(r, bin, len);
    free(bin);
    nodex_reply_send(req);
    return 0;
}

int main(int argc, char **argv) {
    nodex_cnode_options o = {.on_request = on_request, .workers = 2};
    return nodex_cnode_main(argc, argv, &o);
}
'''

CMAKELISTS = r'''
cmake_minimum_required(VERSION 3.25)
project(rev LANGUAGES C)
find_package(NodexCnode 0.1 REQUIRED)
add_executable(rev_static rev_cnode.c)
target_link_libraries(rev_static PRIVATE nodex::nodex_cnode_static)
add_executable(rev_shared rev_cnode.c)
target_link_libraries(rev_shared PRIVATE nodex::nodex_cnode)
'''


def run(argv, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, **kw)
    assert p.returncode == 0, f"{argv}: {p.returncode}\n{p.stdout.decode(errors='replace')}"
    return p.stdout.decode()


@pytest.fixture(scope="module")
def installed():
    """`cmake --install` of the build tree into a temporary prefix, plus a source dir."""
    if not shutil.which("pkg-config") or not shutil.which("cc"):
        pytest.skip("needs pkg-config and cc")
    tmp = tempfile.mkdtemp(prefix="nodex-sdk-")
    prefix = os.path.join(tmp, "prefix")
    run(["cmake", "--install", nx.BUILD_DIR, "--prefix", prefix])
    src = os.path.join(tmp, "src")
    os.mkdir(src)
    with open(os.path.join(src, "rev_cnode.c"), "w") as f:
        f.write(CNODE_C)
    with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
        f.write(CMAKELISTS)
    pcdir = glob.glob(os.path.join(prefix, "lib*", "**", "pkgconfig"), recursive=True)
    assert pcdir, "no pkgconfig directory installed"
    libdir = os.path.dirname(pcdir[0])
    yield {"prefix": prefix, "src": src, "pcdir": pcdir[0], "libdir": libdir, "tmp": tmp}
    shutil.rmtree(tmp, ignore_errors=True)


def check_rev(nodexd, exe, libdir):
    name = "rev"
    d = nodexd([{"name": name, "executable": exe, "backoff_initial_ms": 50,
                 "args": ["{sname}", "{hostname}", "{cookie}", "{gateway_sname}"],
                 "spawn_inactive_timeout_ms": int(5000 * nx.SLOW),
                 "env": {"LD_LIBRARY_PATH": libdir}}])
    d.wait_up(name)
    r = d.call(name, '{reverse, <<"nodexd">>}', content_type="application/x-erlang-text")
    assert r.status == 200 and r.body.decode() == '{ok,<<"dxedon">>}', r
    r = d.call(name, nx.tup(nx.atom("reverse"), {"$binary": "//79gA=="}))
    assert r.status == 200 and r.json() == nx.tup(nx.atom("ok"), {"$binary": "gP3+/w=="}), r
    r = d.call(name, "what", content_type="application/x-erlang-text")
    assert r.status == 200 and r.body.decode() == "{error,badarg}", r


def test_installed_files(installed):
    p = installed["prefix"]
    assert os.path.exists(os.path.join(p, "include", "nodex_cnode.h"))
    libs = os.listdir(installed["libdir"])
    assert "libnodex_cnode.a" in libs and "libnodex_cnode.so" in libs, libs
    assert os.path.exists(os.path.join(installed["libdir"], "cmake", "NodexCnode",
                                       "NodexCnodeConfig.cmake"))
    for exe in ("echo_sdk", "zlib_cnode"):
        assert os.path.exists(os.path.join(p, "libexec", "nodex", exe)), exe


def test_pkg_config_build_runs_under_nodexd(installed, nodexd):
    env = dict(os.environ, PKG_CONFIG_PATH=installed["pcdir"])
    flags = run(["pkg-config", "--cflags", "--libs", "nodex-cnode"], env=env).split()
    assert "-lnodex_cnode" in flags, flags
    exe = os.path.join(installed["tmp"], "rev_pkgconfig")
    run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-o", exe,
         os.path.join(installed["src"], "rev_cnode.c"), *flags], env=env)
    check_rev(nodexd, exe, installed["libdir"])


def test_cmake_find_package_build_runs_under_nodexd(installed, nodexd):
    build = os.path.join(installed["tmp"], "build")
    run(["cmake", "-S", installed["src"], "-B", build, f"-DCMAKE_PREFIX_PATH={installed['prefix']}"]
        + (["-DCMAKE_C_FLAGS=-fsanitize=address,undefined",
            "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"] if nx.SANITIZE else []))
    run(["cmake", "--build", build, "-j2"])
    check_rev(nodexd, os.path.join(build, "rev_static"), installed["libdir"])
    check_rev(nodexd, os.path.join(build, "rev_shared"), installed["libdir"])
