# Install layout: bin/ (nodexd, nodex CLI, container helpers), libexec/nodex/ (example C-nodes),
# etc/nodex/nodexd.yaml (default config), share/doc/nodex/ (docs), share/nodex/ (deploy files).
include(GNUInstallDirs)

install(TARGETS nodexd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The nodex CLI, once a target of that name exists.
if(TARGET nodex_cli)
  install(TARGETS nodex_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# Example C-nodes: nodexd looks bare executable names up beside itself, then in ../libexec/nodex.
foreach(src ${NODEX_EXAMPLES})
  get_filename_component(name ${src} NAME_WE)
  install(TARGETS ${name} RUNTIME DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/nodex)
endforeach()

# Default configuration: the embedded default made explicit (HTTP on 127.0.0.1 only).
install(FILES ${CMAKE_SOURCE_DIR}/deploy/nodexd.yaml DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/nodex)

# Container and service helpers (used by the image; harmless on a host).
install(PROGRAMS ${CMAKE_SOURCE_DIR}/deploy/docker/entrypoint.sh
        DESTINATION ${CMAKE_INSTALL_BINDIR} RENAME nodexd-entrypoint)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/deploy/docker/healthcheck.sh
        DESTINATION ${CMAKE_INSTALL_BINDIR} RENAME nodexd-healthcheck)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/deploy/docker/trial-cert.sh
        DESTINATION ${CMAKE_INSTALL_BINDIR} RENAME nodexd-trial-cert)

# Documentation.
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB NODEX_DOCS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${NODEX_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/docs/openapi.json DESTINATION ${CMAKE_INSTALL_DOCDIR})

# Deployment files for packagers and operators: the container config, the Kubernetes manifests
# and the systemd unit, whose ExecStart is rewritten to the actual install prefix.
install(FILES ${CMAKE_SOURCE_DIR}/deploy/docker/nodexd.yaml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/nodex/docker)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/k8s/ DESTINATION ${CMAKE_INSTALL_DATADIR}/nodex/k8s
        FILES_MATCHING PATTERN "*.yaml")
set(NODEX_UNIT_SOURCE ${CMAKE_SOURCE_DIR}/deploy/systemd/nodexd.service)
string(CONFIGURE [[
  set(_unit_src "@NODEX_UNIT_SOURCE@")
  file(READ "${_unit_src}" _unit)
  string(REPLACE "/usr/local/bin/" "${CMAKE_INSTALL_PREFIX}/@CMAKE_INSTALL_BINDIR@/" _unit "${_unit}")
  set(_unit_dir "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/@CMAKE_INSTALL_DATADIR@/nodex/systemd")
  message(STATUS "Installing: ${_unit_dir}/nodexd.service")
  file(MAKE_DIRECTORY "${_unit_dir}")
  file(WRITE "${_unit_dir}/nodexd.service" "${_unit}")
]] NODEX_UNIT_INSTALL_CODE @ONLY)
install(CODE "${NODEX_UNIT_INSTALL_CODE}")
