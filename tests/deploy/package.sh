#!/usr/bin/env bash
# Integration (issue 12): the Debian package, built, linted, installed, used and purged on this
# machine. Builds it with CPack from BUILD_DIR, checks its control fields (runtime dependencies
# from dpkg-shlibdeps, conffiles) and contents, runs lintian (no error; any warning not listed
# below fails too), installs it with `apt-get install ./pgshift_*.deb`, then from the installed
# paths: `pgshift version`, the `pgshift` system user, `pgshift check` and a short `pgshift run`
# as that user against two throwaway clusters, `systemd-analyze verify` and `security` on the
# installed unit; then `apt-get purge` and checks that none of the package's files, /etc/pgshift
# and /var/lib/pgshift are left. The pgshift user and group are kept by purge (Debian keeps
# system users: files elsewhere may still belong to them).
# Usage: package.sh BUILD_DIR
# Exit: 0 ok, 1 failure, 77 skipped (not root, no apt-get/dpkg, or a pgshift package that this
# test did not install is already there).
set -euo pipefail
build=$(cd "${1:?usage: package.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[ "$EUID" = 0 ] || { echo "SKIP: installing a package needs root"; exit 77; }
for tool in apt-get dpkg dpkg-deb dpkg-query cpack; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed (not a Debian system?)"; exit 77; }
done
command -v lintian >/dev/null || { echo "FAIL: lintian not installed (scripts/install-deps.sh installs it)"; exit 1; }
command -v curl >/dev/null || { echo "FAIL: curl not installed (scripts/install-deps.sh installs it)"; exit 1; }

# One package test at a time on this machine: the package is installed system-wide.
exec 9>/var/lock/pgshift-package-test.lock
flock -w 600 9 || { echo "FAIL: another package test holds /var/lock/pgshift-package-test.lock"; exit 1; }
if dpkg-query -W -f='${Status}' pgshift 2>/dev/null | grep -q "ok installed"; then
  echo "SKIP: a pgshift package is already installed; this test does not replace it (apt-get purge pgshift)"
  exit 77
fi

# Lintian warnings accepted, each explained in the README (Operating, The Debian package).
allowed_warnings=(
  initial-upload-closes-no-bugs   # the package is not uploaded to Debian: there is no ITP bug to close
)

apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
export DEBIAN_FRONTEND=noninteractive
installed=0
fail() { echo "FAIL: $*"; exit 1; }
step() { echo "== $*"; }
t0=$SECONDS

# ------------------------------------------------------------------------------ build
step "building the package (cmake --build $build --target package)"
rm -f "$build"/pgshift_*.deb
log=$build/package-test.log
if ! cmake --build "$build" --target package -j2 >"$log" 2>&1; then
  tail -30 "$log"; fail "building the package failed (log: $log)"
fi
debs=("$build"/pgshift_*.deb)
[ "${#debs[@]}" = 1 ] && [ -f "${debs[0]}" ] || fail "expected one pgshift_*.deb in $build, found: ${debs[*]}"
deb=${debs[0]}
echo "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in $((SECONDS - t0)) s"

# ------------------------------------------------------------------------------ control fields
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
# The runtime packages of what the binary links (dpkg-shlibdeps), and adduser for postinst.
for dep in libpq5 libboost-json1.81.0 'libyaml-cpp0\.7' 'libspdlog1' 'libfmt9' \
           'libprometheus-cpp-core1' libsystemd0 'libstdc\+\+6' adduser; do
  grep -Eq "(^|, )${dep}[a-z0-9.+-]*( \(|,|$)" <<<"$depends" || fail "Depends lacks ${dep//\\/}: $depends"
done
[ "$(dpkg-deb -f "$deb" Package)" = pgshift ] || fail "Package is not pgshift"
[ "$(dpkg-deb -f "$deb" Architecture)" = "$(dpkg --print-architecture)" ] || fail "wrong Architecture"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/pgshift/example.yaml || fail "/etc/pgshift/example.yaml is not a conffile"

contents=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|')
for path in /usr/bin/pgshift /lib/systemd/system/pgshift@.service /etc/pgshift/example.yaml \
            /usr/share/pgshift/grafana/pgshift.json \
            /usr/share/pgshift/grafana/provisioning/dashboards/pgshift.yaml \
            /usr/share/pgshift/grafana/provisioning/datasources/prometheus.yaml \
            /usr/share/pgshift/prometheus/alerts.yml /usr/share/pgshift/prometheus/alerts_test.yml \
            /usr/share/pgshift/prometheus/prometheus.example.yml \
            /usr/share/doc/pgshift/copyright /usr/share/doc/pgshift/changelog.Debian.gz \
            /usr/share/man/man1/pgshift.1.gz; do
  grep -qx -- "$path" <<<"$contents" || fail "the package lacks $path"
done
echo "ok: control fields (Depends from dpkg-shlibdeps, conffiles) and contents"

# ------------------------------------------------------------------------------ lintian
step "lintian"
suppress=""
[ "${#allowed_warnings[@]}" -gt 0 ] && suppress=$(IFS=,; echo "${allowed_warnings[*]}")
lint_out=$(lintian --fail-on error,warning ${suppress:+--suppress-tags "$suppress"} "$deb" 2>&1) && lint_rc=0 || lint_rc=$?
grep -v "running with root privileges" <<<"$lint_out" | sed 's/^/  | /' || true
[ "$lint_rc" = 0 ] || fail "lintian reports errors or unexpected warnings (exit $lint_rc)"
echo "ok: lintian reports no error and no warning beyond: ${allowed_warnings[*]:-none}"

# ------------------------------------------------------------------------------ install
# The clusters, the work directory and the purge run at exit (cluster-pair.sh's on_exit hooks).
source "$here/../../scripts/cluster-pair.sh"
daemon=""
test_config=/etc/pgshift/pkgtest-$$.yaml
purge() {
  [ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null
  rm -f "$test_config"
  [ "$installed" = 1 ] && apt-get purge "${apt_opts[@]}" pgshift >/dev/null 2>&1
  true
}
on_exit purge

step "apt-get install $deb"
installed=1
if ! apt-get install "${apt_opts[@]}" "$deb" >"$work/apt-install.log" 2>&1; then
  tail -20 "$work/apt-install.log"; fail "apt-get install of the package failed"
fi
dpkg-query -W -f='${Status} ${Version}\n' pgshift | grep -q "install ok installed" || fail "pgshift is not installed"
mapfile -t pkg_files < <(dpkg -L pgshift)

[ -x /usr/bin/pgshift ] || fail "/usr/bin/pgshift missing"
version_out=$(/usr/bin/pgshift version) || fail "/usr/bin/pgshift version failed"
echo "$version_out" | sed 's/^/  | /'
grep -q "$(dpkg-deb -f "$deb" Version | cut -d- -f1)" <<<"$version_out" || fail "pgshift version does not print the package version"
getent passwd pgshift >/dev/null || fail "postinst did not create the pgshift user"
getent group pgshift >/dev/null || fail "postinst did not create the pgshift group"
[ "$(id -u pgshift)" -lt 1000 ] || fail "pgshift is not a system user (uid $(id -u pgshift))"
grep -qx "User=pgshift" /lib/systemd/system/pgshift@.service || fail "the installed unit does not run as pgshift"
[ "$(stat -c %a /etc/pgshift/example.yaml)" = 644 ] || fail "/etc/pgshift/example.yaml is not 0644"
echo "ok: installed; /usr/bin/pgshift version; user $(id pgshift)"

# ------------------------------------------------------------------------------ check and run
step "pgshift check and run from the installed paths, as the pgshift user"
psql_src "CREATE TABLE pkg_items (id int PRIMARY KEY, name text)"
psql_dst "CREATE TABLE pkg_items (id int PRIMARY KEY, name text)"
ctl_port=$(free_port)
install -m 0640 -g pgshift /dev/stdin "$test_config" <<YAML
name: pkgtest
source: {conninfo: "$src"}
target: {conninfo: "$dst"}
initial_copy: {enabled: false}
control: {listen: "127.0.0.1:$ctl_port"}
YAML
# setpriv execs (runuser would stay the parent), so that $! of `run` below is the daemon itself.
as_pgshift() { (cd / && exec setpriv --reuid pgshift --regid pgshift --init-groups -- "$@"); }
check_rc=0
as_pgshift /usr/bin/pgshift check --config "$test_config" >"$work/check.log" 2>&1 || check_rc=$?
sed 's/^/  | /' "$work/check.log"
[ "$check_rc" = 0 ] || fail "pgshift check exited $check_rc"
grep -q "^check passed" "$work/check.log" || fail "pgshift check did not print its summary"

# The state directory systemd would create for pgshift@pkgtest (StateDirectory=pgshift/%i);
# purge must remove it.
install -d -o root -g root -m 0755 /var/lib/pgshift
install -d -o pgshift -g pgshift -m 0700 /var/lib/pgshift/pkgtest
(cd / && STATE_DIRECTORY=/var/lib/pgshift/pkgtest exec setpriv --reuid pgshift --regid pgshift --init-groups -- \
   /usr/bin/pgshift run --config "$test_config") >"$work/run.log" 2>&1 &
daemon=$!
api="http://127.0.0.1:$ctl_port"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] && break
  kill -0 "$daemon" 2>/dev/null || { tail -20 "$work/run.log"; fail "pgshift run exited"; }
  sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")" = 200 ] || { tail -20 "$work/run.log"; fail "not ready: $(curl -s "$api/readyz")"; }
psql_src "INSERT INTO pkg_items SELECT g, 'row ' || g FROM generate_series(1, 100) g"
for _ in $(seq 1 50); do
  [ "$(psql_dst "SELECT count(*) FROM pkg_items")" = 100 ] && break
  sleep 0.2
done
[ "$(psql_dst "SELECT count(*) FROM pkg_items")" = 100 ] || fail "the installed daemon did not replicate 100 rows"
kill -TERM "$daemon"
run_rc=0
wait "$daemon" || run_rc=$?
daemon=""
[ "$run_rc" = 0 ] || { tail -20 "$work/run.log"; fail "pgshift run exited $run_rc after SIGTERM"; }
psql_src "SELECT pg_drop_replication_slot('pgshift_pkgtest')" >/dev/null
echo "ok: check passed and run replicated 100 rows as the pgshift user; SIGTERM exit 0"

# ------------------------------------------------------------------------------ systemd
step "systemd-analyze on the installed unit"
if command -v systemd-analyze >/dev/null; then
  mkdir "$work/unit"
  ln -s /lib/systemd/system/pgshift@.service "$work/unit/pgshift@pkgtest.service"
  out=$(cd "$work/unit" && systemd-analyze verify --man=no "$work/unit/pgshift@pkgtest.service" 2>&1) \
    || { echo "$out"; fail "systemd-analyze verify failed on the installed unit"; }
  [ -z "$out" ] || { echo "$out"; fail "systemd-analyze verify warns about the installed unit"; }
  # Exposure on systemd's 0-100 scale: fail above 2.0 (the unit scores 1.4 "OK" today).
  sec=$(systemd-analyze security --offline=true --threshold=20 "$work/unit/pgshift@pkgtest.service" 2>&1) \
    || { echo "$sec" | tail -5; fail "systemd-analyze security: exposure above 2.0"; }
  echo "ok: systemd-analyze verify clean; $(grep -o 'Overall exposure level.*' <<<"$sec")"
else
  echo "skipped: systemd-analyze not installed"
fi

# ------------------------------------------------------------------------------ purge
step "apt-get purge pgshift"
rm -f "$test_config"
apt-get purge "${apt_opts[@]}" pgshift >"$work/apt-purge.log" 2>&1 || { tail -20 "$work/apt-purge.log"; fail "apt-get purge failed"; }
installed=0
status=$(dpkg-query -W -f='${db:Status-Abbrev}' pgshift 2>/dev/null || true)
[ -z "$status" ] || [[ $status == un* ]] || fail "pgshift is still known to dpkg after purge: $status"
left=()
for f in "${pkg_files[@]}"; do
  case "$f" in /.|/etc|/lib|/lib/systemd|/lib/systemd/system|/usr|/usr/bin|/usr/share|/usr/share/doc|/usr/share/man|/usr/share/man/man1) continue ;; esac
  [ -e "$f" ] || [ -L "$f" ] && left+=("$f")
done
[ -e /etc/pgshift ] && left+=(/etc/pgshift)
[ -e /var/lib/pgshift ] && left+=(/var/lib/pgshift)
[ "${#left[@]}" = 0 ] || fail "left after purge: ${left[*]}"
getent passwd pgshift >/dev/null && echo "note: the pgshift system user and group stay after purge (Debian policy)"
echo "ok: purge removed all ${#pkg_files[@]} paths of the package, /etc/pgshift and /var/lib/pgshift"
echo "package test passed in $((SECONDS - t0)) s"
