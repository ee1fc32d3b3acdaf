#!/usr/bin/env bash
# The package as a user gets it: the sdist and the wheel built from it, the wheel installed into a fresh
# venv, and everything checked from outside the checkout (so nothing can come from the source tree):
#   - the console script runs;
#   - every module of the public packages imports, from site-packages;
#   - nothing but those packages is installed at the top level (no generic examples/benchmarks/interop);
#   - each package carries py.typed, and a user's mypy reads our annotations through it (PEP 561).
# Build output lives in a temporary folder, deleted at exit; the checkout is not written to.
# Run from CI (.ci/run) with the project's venv active (it provides pip and mypy).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- building the sdist and the wheel (from the sdist) in $work"
python -m pip install --quiet build
# The files a clone has (tracked, plus new ones not ignored): no .venv, caches or egg-info are copied,
# and setuptools writes its egg-info into the copy, not the checkout.
mkdir "$work/src"
git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 tar -cf - --) \
    | tar -xf - -C "$work/src"
python -m build --outdir "$work/dist" "$work/src" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work/dist"

echo "-- installing the wheel into a fresh venv"
python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/*.whl

cd "$work"  # outside the checkout: imports can only come from the installed wheel
echo "-- mls-tunnel --help"
"$work/venv/bin/mls-tunnel" --help > /dev/null

echo "-- imports, top-level names and py.typed in site-packages"
"$work/venv/bin/python" -I - <<'EOF'
import importlib
import importlib.metadata
import pathlib
import pkgutil
import sysconfig

PUBLIC = ("mlscore", "mls2p", "mlstls", "mlsquic")
site = pathlib.Path(sysconfig.get_paths()["purelib"])
files = importlib.metadata.distribution("mls-transport").files or []
top_level = {file.parts[0] for file in files if file.parts[0] != ".." and not file.parts[0].endswith(".dist-info")}
assert top_level == set(PUBLIC), f"the wheel installs {sorted(top_level)}, not just {PUBLIC}"
for name in ("examples", "benchmarks", "interop", "tests"):
    assert not (site / name).exists(), f"site-packages has a top-level {name}"
modules = 0
optional: list[str] = []
for name in PUBLIC:
    package = importlib.import_module(name)
    folder = pathlib.Path(package.__file__).parent
    assert folder.parent == site, f"{name} was imported from {folder}, not from the installed wheel"
    assert (folder / "py.typed").is_file(), f"{name} has no py.typed"
    for module in pkgutil.walk_packages(package.__path__, f"{name}."):
        try:
            importlib.import_module(module.name)
        except ImportError as exc:  # an optional extra's module must say which extra it needs
            assert "pip install mls-transport[" in str(exc), f"{module.name} does not import: {exc}"
            optional.append(module.name)
            continue
        modules += 1
print(f"{len(PUBLIC)} packages and {modules} modules import from {site}; top level: {sorted(top_level)}; "
      f"needing an extra: {optional}")
EOF

echo "-- a user's mypy sees our types"
cat > "$work/user.py" <<'EOF'
from mls2p.identity import fingerprint

wrong: int = fingerprint(b"", 1)  # a str: mypy must say so, which it can only if it reads mls2p's annotations
EOF
if python -m mypy --python-executable "$work/venv/bin/python" --no-incremental "$work/user.py" > "$work/mypy.log"; then
    echo "mypy found no error in user.py: it does not read the installed annotations" >&2
    exit 1
fi
if ! grep -q 'Incompatible types in assignment (expression has type "str", variable has type "int")' "$work/mypy.log"; then
    cat "$work/mypy.log" >&2
    exit 1
fi
echo "wheel check passed"
