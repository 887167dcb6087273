# Sourced by scripts/base-images and scripts/test-deploy: podman reads its settings from these repo files, never from
# edits to the machine's /etc/containers. Installs podman, runc and debootstrap (Debian packages) when missing.
DEPLOY_PODMAN_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="$DEPLOY_PODMAN_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$DEPLOY_PODMAN_DIR/storage.conf"

need_packages() {
    local missing=() tool
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "installing Debian's ${missing[*]} for the container checks..." >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
