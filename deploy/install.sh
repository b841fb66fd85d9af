#!/usr/bin/env bash
# Install or update an alc controller on 64-bit Raspberry Pi OS or Debian, as
# root. docs/install.md is the whole walk, from a fresh SD card to a door.
#
#   sudo bash install.sh                  # the alc-*.whl beside it, or in ../dist
#   sudo bash install.sh --wheel alc-0.1.0-py3-none-any.whl
#
# It makes, and on a second run only checks:
#   user and group alc (system account, no login), in the groups gpio and dialout
#   /opt/alc/venv          a venv holding the wheel with its gpio and osdp extras and lgpio
#   /usr/local/bin/alc     -> /opt/alc/venv/bin/alc
#   /etc/alc (0700)        controller.toml (0600, commented; never overwritten), keys/
#   /var/lib/alc (0700)    the controller's data
#   /etc/systemd/system/alc-controller.service  (not enabled: configure first)
# and prints the next three steps. The unit and the example config come out of
# the wheel (<venv>/share/alc), so the wheel and this script are all it needs.
#
# Options:
#   --wheel FILE      the alc wheel to install (`make dist` builds it)
#   --wheelhouse DIR  take every dependency from DIR, never from an index (an
#                     offline install; docs/install.md says how to fill DIR)
#   --no-lgpio        leave out the lgpio pin driver (a machine it has no wheel for)
#   --python PY       the Python 3.11+ to make the venv with (python3)
#   --root DIR        install into DIR as if it were / (the tests' scratch root):
#                     users go into DIR/etc/passwd and DIR/etc/group (useradd
#                     --prefix), nothing outside DIR is touched, systemd is not
#                     told. The venv's scripts then name DIR in their first line:
#                     such a tree is for looking at, not for copying to a Pi.
set -euo pipefail
umask 022

NAME=install.sh
VENV=/opt/alc/venv
UNIT=/etc/systemd/system/alc-controller.service
LGPIO_REQ="lgpio>=0.2.2" # 0.2.2 is the first with wheels for aarch64 and x86_64

die() {
	echo "$NAME: $*" >&2
	exit 1
}
say() { echo "$NAME: $*"; }

ARGS="$*"
ROOT=""
WHEEL=""
WHEELHOUSE=""
LGPIO=yes
PYTHON=python3
while [ $# -gt 0 ]; do
	case "$1" in
	--wheel) WHEEL="${2:?--wheel needs a file}" && shift ;;
	--wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}" && shift ;;
	--no-lgpio) LGPIO=no ;;
	--python) PYTHON="${2:?--python needs a command}" && shift ;;
	--root) ROOT="${2:?--root needs a directory}" && shift ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown option $1 (--help lists them)" ;;
	esac
	shift
done

[ "$(id -u)" = 0 ] || die "run it as root: sudo bash $0 $ARGS"

if [ -n "$ROOT" ]; then
	[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
	ROOT="$(cd "$ROOT" && pwd -P)"
	[ "$ROOT" != / ] || ROOT=""
fi
if [ -n "$WHEELHOUSE" ]; then
	[ -d "$WHEELHOUSE" ] || die "--wheelhouse $WHEELHOUSE: no such directory"
fi

# --- the wheel ---------------------------------------------------------------
if [ -z "$WHEEL" ]; then
	# Beside this script (a release's files copied together), else the ../dist
	# of a checkout after `make dist`. Piped into bash, there is no "beside".
	here="$(dirname -- "${BASH_SOURCE[0]:-}")"
	[ -n "${BASH_SOURCE[0]:-}" ] || die "name the wheel: ... | sudo bash -s -- --wheel FILE"
	found=()
	for dir in "$here" "$here/../dist"; do
		for file in "$dir"/alc-*.whl; do
			[ -e "$file" ] && found+=("$file")
		done
		[ ${#found[@]} -eq 0 ] || break
	done
	[ ${#found[@]} -gt 0 ] || die "no alc-*.whl beside $0 or in $here/../dist: name one with --wheel (make dist builds it)"
	[ ${#found[@]} -eq 1 ] || die "several wheels (${found[*]}): name one with --wheel"
	WHEEL="${found[0]}"
fi
[ -f "$WHEEL" ] || die "--wheel $WHEEL: no such file"
case "$(basename -- "$WHEEL")" in
alc-*-py3-none-any.whl) ;;
*) die "$WHEEL is not an alc wheel (alc-VERSION-py3-none-any.whl)" ;;
esac
WHEEL="$(cd "$(dirname -- "$WHEEL")" && pwd -P)/$(basename -- "$WHEEL")"

# --- Python ------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "no $PYTHON: install python3 (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
	die "alc needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
	# Debian keeps venv's pip bootstrap in its own package.
	if [ -n "$ROOT" ] || ! command -v apt-get >/dev/null; then
		die "$PYTHON cannot make a venv: install python3-venv"
	fi
	say "installing python3-venv"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi

# --- the user and its groups -------------------------------------------------
# Read from the files useradd writes (in the scratch root too), not from NSS.
PASSWD="$ROOT/etc/passwd"
GROUP="$ROOT/etc/group"
[ -f "$PASSWD" ] || die "no $PASSWD"
[ -f "$GROUP" ] || die "no $GROUP"
PREFIX=()
[ -z "$ROOT" ] || PREFIX=(--prefix "$ROOT")

has_group() { awk -F: -v g="$1" '$1 == g { found = 1 } END { exit !found }' "$GROUP"; }
has_user() { awk -F: -v u="$1" '$1 == u { found = 1 } END { exit !found }' "$PASSWD"; }
is_member() {
	awk -F: -v u="$1" -v g="$2" '
		$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 }
		END { exit !found }' "$GROUP"
}
field() { awk -F: -v k="$2" -v f="$3" '$1 == k { print $f }' "$1"; }

NEW_GPIO_GROUP=no
for group in gpio dialout; do
	if ! has_group "$group"; then
		# Plain Debian has no gpio group (Raspberry Pi OS has): make it, and
		# below the udev rule that gives it the GPIO chips.
		say "adding group $group"
		groupadd "${PREFIX[@]}" --system "$group"
		[ "$group" != gpio ] || NEW_GPIO_GROUP=yes
	fi
done
if ! has_user alc; then
	say "adding user alc"
	useradd "${PREFIX[@]}" --system --user-group --groups gpio,dialout \
		--home-dir /var/lib/alc --no-create-home --shell /usr/sbin/nologin \
		--comment "alc controller" alc
fi
for group in gpio dialout; do
	if ! is_member alc "$group"; then
		say "adding user alc to group $group"
		usermod "${PREFIX[@]}" --append --groups "$group" alc
	fi
done
ALC_UID="$(field "$PASSWD" alc 3)"
ALC_GID="$(field "$PASSWD" alc 4)"

# --- files, changed only when they differ ------------------------------------
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# mode and owner of one path, fixed if wrong
own() {
	local path="$ROOT$1" mode="$2" uid="$3" gid="$4"
	if [ "$(stat -c '%a %u %g' "$path")" != "$mode $uid $gid" ]; then
		chown -h "$uid:$gid" "$path"
		chmod "$mode" "$path"
	fi
}
directory() {
	if [ ! -d "$ROOT$1" ]; then
		say "making $1"
		mkdir -p "$ROOT$1"
	fi
	own "$@"
}
# A system directory (/usr/local/bin, /etc/systemd/system): made if missing,
# its owner and mode left as the system has them.
system_directory() { [ -d "$ROOT$1" ] || mkdir -p "$ROOT$1"; }
# put_file SOURCE DEST MODE UID GID: copy when the content differs
put_file() {
	local source="$1" dest="$2"
	shift 2
	if ! cmp -s "$source" "$ROOT$dest"; then
		say "writing $dest"
		install -m "$1" -o "$2" -g "$3" "$source" "$ROOT$dest"
		return 0
	fi
	own "$dest" "$@"
	return 1
}

directory /opt/alc 755 0 0
directory /etc/alc 700 "$ALC_UID" "$ALC_GID"
directory /etc/alc/keys 700 "$ALC_UID" "$ALC_GID"
directory /var/lib/alc 700 "$ALC_UID" "$ALC_GID"

# --- the venv ----------------------------------------------------------------
# The venv belongs to root: the controller runs code it cannot change.
STAMP=/opt/alc/installed
want="wheel $(basename -- "$WHEEL") sha256 $(sha256sum "$WHEEL" | cut -d' ' -f1)
lgpio $LGPIO"
INSTALLED=no
if [ ! -x "$ROOT$VENV/bin/python" ]; then
	say "making the venv $VENV"
	rm -f "$ROOT$STAMP" # whatever it says was in a venv that is gone
	"$PYTHON" -m venv "$ROOT$VENV"
fi
if [ "$(cat "$ROOT$STAMP" 2>/dev/null)" != "$want" ]; then
	INSTALLED=yes
	say "installing $(basename -- "$WHEEL") into $VENV"
	pip=("$ROOT$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
	[ -z "$WHEELHOUSE" ] || pip+=(--no-index --find-links "$WHEELHOUSE")
	extra=()
	[ "$LGPIO" = no ] || extra=("$LGPIO_REQ")
	# gpio: gpiozero and pyserial; osdp: libosdp, for OSDP readers.
	"${pip[@]}" "${WHEEL}[gpio,osdp]" "${extra[@]}"
	# The same version number may be another build (a development wheel):
	# this one replaces whatever is there.
	"${pip[@]}" --force-reinstall --no-deps "$WHEEL"
	printf '%s\n' "$want" >"$ROOT$STAMP"
fi
"$ROOT$VENV/bin/alc" --help >/dev/null || die "$VENV/bin/alc does not run"
SHARE="$ROOT$VENV/share/alc"

system_directory /usr/local/bin
if [ "$(readlink "$ROOT/usr/local/bin/alc" 2>/dev/null)" != "$VENV/bin/alc" ]; then
	if [ -e "$ROOT/usr/local/bin/alc" ] && [ ! -L "$ROOT/usr/local/bin/alc" ]; then
		say "leaving /usr/local/bin/alc alone (not a link): run $VENV/bin/alc"
	else
		say "linking /usr/local/bin/alc"
		ln -sfn "$VENV/bin/alc" "$ROOT/usr/local/bin/alc"
	fi
fi

# --- config ------------------------------------------------------------------
CONFIG=/etc/alc/controller.toml
if [ -e "$ROOT$CONFIG" ]; then
	say "keeping $CONFIG"
else
	# The example, with its [[masters]] table commented out: a master opens
	# every door with no data, so a club chooses its own or none.
	draft="$TMP/controller.toml"
	{
		echo "# Written by install.sh from controller.example.toml. Set [controller] site and"
		echo "# id, the broker in [mqtt] and the wiring (docs/hardware.md), then"
		echo "# check it: sudo -u alc alc hw test --config $CONFIG (docs/install.md)."
		echo
		awk '/^\[\[masters\]\]/ { masters = 1 }
			masters && /^$/ { masters = 0 }
			{ print (masters ? "# " : "") $0 }' "$SHARE/controller.example.toml"
	} >"$draft"
	say "writing $CONFIG"
	install -m 600 -o "$ALC_UID" -g "$ALC_GID" "$draft" "$ROOT$CONFIG"
fi

# --- systemd and udev --------------------------------------------------------
system_directory /etc/systemd/system
UNIT_CHANGED=no
if put_file "$SHARE/alc-controller.service" "$UNIT" 644 0 0; then
	UNIT_CHANGED=yes
fi
if [ "$NEW_GPIO_GROUP" = yes ] || [ -e "$ROOT/etc/udev/rules.d/60-alc-gpio.rules" ]; then
	# Raspberry Pi OS's own rules give group gpio the GPIO chips; plain Debian's
	# leave them to root, and the controller does not run as root.
	system_directory /etc/udev/rules.d
	rule="$TMP/60-alc-gpio.rules"
	echo 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' >"$rule"
	if put_file "$rule" /etc/udev/rules.d/60-alc-gpio.rules 644 0 0 &&
		[ -z "$ROOT" ] && command -v udevadm >/dev/null; then
		udevadm control --reload && udevadm trigger --subsystem-match=gpio
	fi
fi
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
	[ "$UNIT_CHANGED" = no ] || systemctl daemon-reload
	if [ "$INSTALLED$UNIT_CHANGED" != nono ] && systemctl is-active --quiet alc-controller; then
		say "alc-controller runs the old version until: sudo systemctl restart alc-controller"
	fi
fi

cat <<EOF

alc is installed: $("$ROOT$VENV/bin/python" -c 'from importlib.metadata import version; print(version("alc"))') in $VENV. Next (docs/install.md):
  1. Set site, id, broker and wiring in $CONFIG:
       sudo nano $CONFIG
  2. Put the controller's key in /etc/alc/keys and its broker files in /etc/alc
     (owner alc, mode 0600: docs/install.md "Keys" and "Broker account").
  3. Check the wiring, then start it:
       sudo -u alc alc hw test --config $CONFIG
       sudo systemctl enable --now alc-controller
EOF
