#!/usr/bin/env bash
# The container engine, called one way everywhere: by make (image, test-image) and by the image
# tests (tests/image/). Usage:
#   tools/podman.sh setup            Debian packages missing? install them as root, else name them
#   tools/podman.sh base IMAGE       make the base image IMAGE from Debian's packages, once
#   tools/podman.sh build-image TAG...  build the Dockerfile here, tagged with each TAG
#   tools/podman.sh image-size IMAGE MAX_MB  print the image's size; fail at MAX_MB or more
#   tools/podman.sh compose ARGS...  podman-compose with this engine
#   tools/podman.sh ARGS...          the engine itself, e.g. run, exec, stop, inspect
#
# podman where it is installed (or can be, as root); docker only where a docker engine answers
# and podman is absent. THUMBGEN_ENGINE=podman|docker chooses. The flags below are the facts of
# our 2-core Debian VMs (../shared/NOTES.md), harmless on an ordinary host:
# - crun fails there ("cgroups in hybrid mode not supported"): runc, with the cgroupfs manager;
# - the default ulimits cannot be set inside the VM: nofile and nproc at most the hard limits;
# - no image registry is reachable: the base is made locally (`base`) and never pulled;
# - pip reaches the package index only through a TLS proxy whose certificate is in the host's CA
#   bundle: the bundle is mounted read-only into the build and handed to pip by the PIP_CERT
#   build argument (an --env of `podman build` does not reach RUN steps). Elsewhere the argument
#   is empty and pip uses its own certificates.
set -euo pipefail
# No cd: podman-compose calls this script as its podman, with paths relative to where it runs.
REPO=$(cd "$(dirname "$0")/.." && pwd)

PACKAGES=(podman runc debootstrap podman-compose catatonit)
HOST_CA=${THUMBGEN_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
BUILD_CA=/run/host-ca.crt

engine() {
  if [ -n "${THUMBGEN_ENGINE:-}" ]; then echo "$THUMBGEN_ENGINE"
  elif command -v podman >/dev/null 2>&1; then echo podman
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker
  else echo podman  # `setup` installs it
  fi
}
ENGINE=$(engine)

# The lower of 1024 and the hard limit: enough for the daemon, never more than the VM allows.
limit() {
  if [ "$1" = unlimited ] || [ "$1" -gt 1024 ]; then echo 1024; else echo "$1"; fi
}
ULIMITS=(--ulimit "nofile=$(limit "$(ulimit -Hn)"):$(limit "$(ulimit -Hn)")"
         --ulimit "nproc=$(limit "$(ulimit -Hu)"):$(limit "$(ulimit -Hu)")")

# The engine with the flags its calls need, put right after the subcommand. podman-compose calls
# this script as its podman, so the containers and builds it makes get them too.
call() {
  local sub=${1:-} extra=() global=()
  if [ "$ENGINE" = podman ]; then global=(--runtime runc --cgroup-manager=cgroupfs); fi
  case $sub in
    run|create) extra=("${ULIMITS[@]}") ;;
    build)
      extra=(--network host "${ULIMITS[@]}")
      if [ "$ENGINE" = podman ]; then
        # never pull; docker format, as the OCI image config has no HEALTHCHECK (podman drops it)
        extra+=(--pull=never --format docker)
        if [ -r "$HOST_CA" ]; then
          extra+=(--volume "$HOST_CA:$BUILD_CA:ro" --build-arg "PIP_CERT=$BUILD_CA")
        fi
      fi ;;
  esac
  if [ $# -gt 0 ]; then shift; fi
  exec "$ENGINE" "${global[@]}" ${sub:+"$sub"} "${extra[@]}" "$@"
}

setup() {
  if [ "$ENGINE" = docker ]; then return 0; fi
  "$REPO/tools/syspkgs.sh" "${PYTHON:-python3.11}" "${PACKAGES[@]}"
}

# The stand-in for the official debian:bookworm-slim: Debian's minbase, made as that image is
# made (debuerreotype: apt keeps no package caches or translations; "slim": no documentation, man
# pages or locales), with the host's Debian sources (its mirror) so apt-get works in the build.
# A change to this recipe bumps RECIPE, and the next `base` makes the image again.
RECIPE=2
RECIPE_LABEL=thumbgen.base-recipe
base() {
  local image=$1
  if [ "$ENGINE" = docker ]; then
    docker image inspect "$image" >/dev/null 2>&1 && return 0
    echo "base image $image missing: docker pulls it at build time" >&2; return 0
  fi
  if [ "$(podman image inspect --format "{{index .Labels \"$RECIPE_LABEL\"}}" "$image" \
          2>/dev/null)" = "$RECIPE" ]; then
    echo "base image $image: cached"; return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "making the base image $image needs root (debootstrap)" >&2; exit 1; }
  local sources=/etc/apt/sources.list.d/debian.sources mirror started
  # the host's own Debian mirror, else debootstrap's default
  mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' "$sources" 2>/dev/null || true)}
  root=$(mktemp -d /var/tmp/thumbgen-base.XXXXXX)  # global: the EXIT trap runs after return
  [ -d "$root" ] && [ "$root" != / ] || exit 1  # every rm below is under it
  trap 'rm -rf "$root" "$root.log"' EXIT
  started=$SECONDS
  echo "making base image $image: debootstrap --variant=minbase bookworm (about 2 minutes)"
  debootstrap --variant=minbase bookworm "$root" ${mirror:+"$mirror"} >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; exit 1; }
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# as in debian:*-slim: packages installed later leave their documentation out
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/linda/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$root"/usr/share/{man,info,lintian,groff,linda}/* "$root/var/cache/apt"/*.bin
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  if [ -f "$sources" ]; then
    rm -f "$root/etc/apt/sources.list"
    install -m 0644 "$sources" "$root/etc/apt/sources.list.d/debian.sources"
  fi
  rm -rf "$root/var/lib/apt/lists"/* "$root/var/log"/*.log "$root/var/cache/apt/archives"/*.deb
  tar -C "$root" -c . | podman import --change 'CMD ["bash"]' \
    --change "LABEL $RECIPE_LABEL=$RECIPE" - "$image" >/dev/null
  echo "base image $image: made in $(( SECONDS - started )) s"
}

build_image() {
  local names=("$@") tags=() name started=$SECONDS
  for name in "${names[@]}"; do tags+=(--tag "$name"); done
  ( call build "${tags[@]}" "$REPO" )
  echo "built ${names[*]} in $(( SECONDS - started )) s"
}

size() {
  local image=$1 max_mb=$2 bytes mb
  bytes=$("$ENGINE" image inspect --format '{{.Size}}' "$image")
  mb=$(( (bytes + 500000) / 1000000 ))
  echo "image $image: $mb MB (limit $max_mb MB)"
  [ "$mb" -lt "$max_mb" ] || { echo "image $image is $mb MB, not under $max_mb MB" >&2; exit 1; }
}

compose() {
  if [ "$ENGINE" = podman ]; then
    # podman-compose calls this script as its podman, so every call gets the flags above
    exec podman-compose --podman-path "$REPO/tools/podman.sh" "$@"
  fi
  exec docker compose "$@"
}

case ${1:-} in
  engine) echo "$ENGINE" ;;
  setup) setup ;;
  base) shift; base "$@" ;;
  build-image) shift; build_image "$@" ;;
  image-size) shift; size "$@" ;;
  compose) shift; compose "$@" ;;
  "") sed -n '2,8p' "$0" >&2; exit 2 ;;
  *) call "$@" ;;
esac
