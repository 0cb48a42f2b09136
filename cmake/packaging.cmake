# Install rules and the Debian package (CPack DEB): `cmake --build BUILD --target package` or
# `cd BUILD && cpack -G DEB` writes BUILD/pgshift_<version>-<release>_<arch>.deb.
#
# Layout (Debian 12): /usr/bin/pgshift, /lib/systemd/system/pgshift@.service (bookworm's
# systemd and lintian still expect units under /lib), /etc/pgshift/example.yaml (a conffile),
# /usr/share/pgshift/{grafana,prometheus}/, /usr/share/doc/pgshift/{README.md,copyright,
# changelog.Debian.gz}, /usr/share/man/man1/pgshift.1.gz. The maintainer scripts in
# packaging/debian/ create the `pgshift` system user the unit runs as.
# Runtime dependencies come from dpkg-shlibdeps (libpq5, Boost.JSON, yaml-cpp, spdlog, fmt,
# prometheus-cpp, libsystemd, libstdc++), plus adduser for postinst.

set(pgshift_deb_dir ${PROJECT_SOURCE_DIR}/packaging/debian)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)

# The newest changelog entry must name the version being packaged.
file(STRINGS ${pgshift_deb_dir}/changelog pgshift_changelog_head LIMIT_COUNT 1)
if(NOT pgshift_changelog_head MATCHES "^pgshift \\(${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}\\) ")
  message(WARNING "packaging/debian/changelog starts with '${pgshift_changelog_head}', not "
                  "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}: add an entry before packaging")
endif()

# Debian wants compressed changelog and man page, with no timestamp in the gzip header (-n).
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${pgshift_deb_dir}/changelog
                                                             ${PROJECT_SOURCE_DIR}/packaging/pgshift.1)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/packaging)
execute_process(COMMAND gzip -9 -n -c ${pgshift_deb_dir}/changelog
                OUTPUT_FILE ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND gzip -9 -n -c ${PROJECT_SOURCE_DIR}/packaging/pgshift.1
                OUTPUT_FILE ${CMAKE_BINARY_DIR}/packaging/pgshift.1.gz COMMAND_ERROR_IS_FATAL ANY)

# Directories 0755 whatever the umask of the build (lintian: non-standard-dir-perm).
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
install(TARGETS pgshift RUNTIME DESTINATION bin)
install(FILES ${PROJECT_SOURCE_DIR}/systemd/pgshift@.service DESTINATION /lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/config/pgshift.example.yaml DESTINATION /etc/pgshift RENAME example.yaml)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/grafana/pgshift.json DESTINATION share/pgshift/grafana)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/grafana/provisioning DESTINATION share/pgshift/grafana)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/prometheus/alerts.yml
              ${PROJECT_SOURCE_DIR}/deploy/prometheus/alerts_test.yml
              ${PROJECT_SOURCE_DIR}/deploy/prometheus/prometheus.example.yml
        DESTINATION share/pgshift/prometheus)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${pgshift_deb_dir}/copyright
              ${CMAKE_BINARY_DIR}/packaging/changelog.Debian.gz
        DESTINATION share/doc/pgshift)
install(FILES ${CMAKE_BINARY_DIR}/packaging/pgshift.1.gz DESTINATION share/man/man1)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pgshift)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT "Seed 81b89ec2 maintainers <maintainers@users.noreply.b-seed-81b89ec2.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "live PostgreSQL migration with logical replication")
# CPack puts the summary on the Description line; this is the extended description.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "pgshift is a daemon that moves a live PostgreSQL database to a new server
with near-zero downtime. It streams every committed change from the old
server to the new one through logical decoding (pgoutput), exactly once and
in commit order, surviving restarts of itself and of both servers, and
exports its lag and progress as Prometheus metrics.
.
The package ships the daemon, a systemd unit template (one instance per
migration, configured in /etc/pgshift/INSTANCE.yaml), an example
configuration, a Grafana dashboard and Prometheus alert rules.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
# schema: copy runs pg_dump / pg_restore of the source's major version (or newer).
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "postgresql-client")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${pgshift_deb_dir}/conffiles ${pgshift_deb_dir}/postinst ${pgshift_deb_dir}/prerm ${pgshift_deb_dir}/postrm)
# Maintainer scripts 0755, conffiles 0644, whatever the checkout's permissions.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Debian ships stripped binaries (lintian: unstripped-binary-or-object).
set(CPACK_STRIP_FILES ON)
include(CPack)
