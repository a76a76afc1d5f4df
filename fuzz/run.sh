#!/usr/bin/env bash
# Builds the libFuzzer harnesses into fuzz/build/ and runs them.
#
#   fuzz/run.sh SECONDS [json_decode|float|content_type|ignore|form|all]   (default: all, SECONDS each)
#
# json_decode, float, content_type: C harnesses (float: the float formatter and parser
# against the C library's strtod/snprintf, no Python).  Need clang with libFuzzer (Debian: apt-get install
# clang) and the Python the project builds against (PYTHON, default .venv/bin/python, else
# python3).  ignore, form: atheris harnesses of the Python-side parsers (the .cortexignore
# matcher, the form decoder), run by PYTHON, which needs atheris (pip install atheris).  Seeds: every file of
# ../shared/testdata/json-test-suite/test_parsing (when present) plus a few built in.
# Exits non-zero on any crash, sanitizer report, leak or timeout; the crashing input is
# left in fuzz/build/artifacts/.
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS [json_decode|float|content_type|ignore|form|all]}
which_target=${2:-all}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$here/build
mkdir -p "$build/artifacts"

CC=${CC:-clang}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
flags=(-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -std=c11 -D_GNU_SOURCE -I"$root/csrc")

build_json() {
    local inc libdir ldlib
    inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    libdir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    ldlib=$("$PYTHON" -c 'import sysconfig; v = sysconfig.get_config_var("LDVERSION"); print("python" + v)')
    "$CC" "${flags[@]}" -I"$inc" -o "$build/json_decode_fuzzer" \
        "$here/json_decode_fuzzer.c" "$root/csrc/json_decode.c" "$root/csrc/json_encode.c" \
        "$root/csrc/buf.c" "$root/csrc/pow10.c" "$root/csrc/float_format.c" "$root/csrc/float_parse.c" \
        -L"$libdir" -Wl,-rpath,"$libdir" -l"$ldlib" -lm
    # seeds: the JSON test suite (parsing and transform cases) and a realistic document
    mkdir -p "$build/corpus/json_decode"
    local suite=$root/../shared/testdata/json-test-suite
    for d in test_parsing test_transform; do
        if [ -d "$suite/$d" ]; then cp -n "$suite/$d"/*.json "$build/corpus/json_decode/" 2>/dev/null || true; fi
    done
    printf '{"id": 12, "name": "caf\\u00e9 \xc3\xa9", "tags": ["a", "b"], "score": -1.5e-3, "ok": true, "none": null, "nested": {"k": [1, 2, {"x": "\\ud834\\udd1e"}]}}' \
        > "$build/corpus/json_decode/seed-document.json"
}

build_float() {
    "$CC" "${flags[@]}" -o "$build/float_fuzzer" "$here/float_fuzzer.c" "$root/csrc/float_format.c" \
        "$root/csrc/float_parse.c" "$root/csrc/pow10.c" -lm
    local c=$build/corpus/float
    mkdir -p "$c"
    # 0.1, 1e23's neighbour, the smallest normal; each followed by a decimal
    printf '\x9a\x99\x99\x99\x99\x99\xb9\x3f\x01\x00\x00\x00\x00\x00\x00\x00\x90\x01' > "$c/seed-1"
    printf '\xff\xff\xff\xff\xff\xff\x0f\x00\xff\xff\xff\xff\xff\xff\x00\x00\x10\x00' > "$c/seed-2"
    printf '\x00\x00\x00\x00\x00\x00\x10\x00\x15\xcd\x5b\x07\x00\x00\x00\x00\x50\x00' > "$c/seed-3"
}

build_content_type() {
    "$CC" "${flags[@]}" -o "$build/content_type_fuzzer" \
        "$here/content_type_fuzzer.c" "$root/csrc/content_type.c"
    local c=$build/corpus/content_type
    mkdir -p "$c"
    printf '\x10\x00application/json; charset=utf-8' > "$c/seed-1"
    printf '\x08\x00text/plain;charset="latin-1"; format=flowed' > "$c/seed-2"
    printf '\x20\x01multipart/form-data; boundary="a;b c"; charset=x' > "$c/seed-3"
    printf '\x00\x00 application/x-www-form-urlencoded ; CHARSET = "' > "$c/seed-4"
    printf '\x03\x04text/plain; =; ; c=; charset' > "$c/seed-5"
}

seed_ignore() {
    local c=$build/corpus/ignore
    mkdir -p "$c"
    # layout (see fuzz/atheris_ignore.py): flags byte, pattern lines, the path on the last line
    printf '\x00# comment\n*.pyc\n!keep.pyc\nbuild/\n/docs/**/*.md\n[a-c]?x\n\\#lit\\ \nsrc/build/x.pyc' > "$c/seed-1"
    printf '\x01**/node_modules\n[!0-9]*.log\na/**/b\n\\!bang\n[]x]\n[z-a]\nnode_modules' > "$c/seed-2"
    printf '\x00dir/\n!dir/keep\n*.tmp  \n[\\]-a]\ndir/keep' > "$c/seed-3"
}

seed_form() {
    local c=$build/corpus/form
    mkdir -p "$c"
    # layout (see fuzz/atheris_form.py): selector, boundary length, boundary, body ({B}: boundary)
    printf '\x00\x03xyz--{B}\r\nContent-Disposition: form-data; name="a"\r\n\r\nhello\r\n--{B}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\xff\r\n--{B}--\r\n' > "$c/seed-1"
    printf '\x01\x05a b;c--{B}\r\nContent-Disposition: form-data; name*=utf-8\x27\x27caf%%C3%%A9\r\nContent-Type: text/plain; charset=latin-1\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--{B}--' > "$c/seed-2"
    printf '\x03\x00a=1&b=%%C3%%A9&c&d=x+y&&e=%%zz' > "$c/seed-3"
    printf '\x04\x2amultipart/form-data; boundary="q"; charset=utf-8--q\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--q--' > "$c/seed-4"
}

run_atheris() { # name, extra args...: the harness fuzz/atheris_NAME.py under PYTHON
    local name=$1
    shift
    if ! "$PYTHON" -c 'import atheris' 2>/dev/null; then
        echo "$PYTHON has no atheris: $PYTHON -m pip install atheris" >&2
        return 2
    fi
    echo "== $name: ${seconds}s"
    PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" "$here/atheris_$name.py" "$build/corpus/$name" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
        -artifact_prefix="$build/artifacts/$name-" -print_final_stats=1 "$@"
}

run_one() { # name, dict, extra args...
    local name=$1 dict=$2
    shift 2
    echo "== $name: ${seconds}s"
    # the fuzzer process needs no Python of its own beyond the embedded interpreter
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$build/${name}_fuzzer" "$build/corpus/$name" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -dict="$here/$dict" -artifact_prefix="$build/artifacts/$name-" \
        -print_final_stats=1 "$@"
}

case $which_target in
json_decode)  build_json; run_one json_decode json.dict -max_len=65536 ;;
float)        build_float; run_one float float.dict -max_len=64 ;;
content_type) build_content_type; run_one content_type content_type.dict -max_len=512 ;;
ignore)       seed_ignore; run_atheris ignore -max_len=4096 ;;
form)         seed_form; run_atheris form -max_len=16384 ;;
all)
    build_json
    build_float
    build_content_type
    seed_ignore
    seed_form
    run_one json_decode json.dict -max_len=65536
    run_one float float.dict -max_len=64
    run_one content_type content_type.dict -max_len=512
    run_atheris ignore -max_len=4096
    run_atheris form -max_len=16384
    ;;
*) echo "unknown target: $which_target" >&2; exit 2 ;;
esac
echo "== no crashes"
