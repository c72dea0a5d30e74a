# Copy the runtime's Python alone into ROOT: the interpreter python3 on PATH is (the one
# `uv pip install --system` uses), the libraries it links (by ldd) and its standard library, and a
# link to it at LINK (under ROOT). Runs in the runtime image: sh copy_python_alone.sh ROOT LINK.
set -eu
root=$1 link=$2
python=$(readlink -f "$(command -v python3)")
stdlib=$(python3 -I -S -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
mkdir -p "$root"
{ echo "$python"; ldd "$python" | grep -o '/[^ ]*'; } | tar -c --dereference -P -T - | tar -x -C "$root"
tar -c -P "$stdlib" | tar -x -C "$root"
mkdir -p "$root$(dirname "$link")"
ln -s "$python" "$root$link"
