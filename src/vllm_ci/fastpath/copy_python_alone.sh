# Copy the runtime's Python alone into ROOT: the interpreter python3 on PATH is (the one
# `uv pip install --system` uses) and the libraries it links (by ldd); of its standard library, the files
# the compile of bytecode reads (READS, the text of stdlib_the_compile_reads.py, run with COMPILE, the
# compile's program) and the libraries those link; and a link to it at LINK (under ROOT). The rest of the
# standard library is left out: each file is a cost of every pull. Runs in the runtime image:
# sh copy_python_alone.sh ROOT LINK READS COMPILE.
set -eu
root=$1 link=$2 reads=$3 compile=$4
python=$(readlink -f "$(command -v python3)")
stdlib_files=$(python3 -I -S -c "$reads" "$compile")
mkdir -p "$root"
{ echo "$python"; ldd "$python" | grep -o '/[^ ]*'; } | tar -c --dereference -P -T - | tar -x -C "$root"
printf '%s\n' "$stdlib_files" | tar -c -P -T - | tar -x -C "$root"
printf '%s\n' "$stdlib_files" | grep '\.so$' | while read -r module; do ldd "$module" | grep -o '/[^ ]*'; done |
    sort -u | tar -c --dereference -P -T - | tar -x -C "$root"
mkdir -p "$root$(dirname "$link")"
ln -s "$python" "$root$link"
