"""Builds the one C extension, cortex_runtime._core, against the system libmicrohttpd."""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup


def pkg_config(*args):
    if shutil.which("pkg-config") is None:
        return None
    try:
        out = subprocess.run(["pkg-config", *args, "libmicrohttpd"], check=True,
                             capture_output=True, text=True).stdout
    except subprocess.CalledProcessError:
        return None
    return out.split()


cflags = pkg_config("--cflags")
libs = pkg_config("--libs")
if cflags is None or libs is None:
    sys.exit("error: libmicrohttpd was not found by pkg-config: "
             "install it with 'apt-get install libmicrohttpd-dev pkg-config'")

compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes",
                "-Wmissing-prototypes", "-Wvla", "-fvisibility=hidden",
                "-D_GNU_SOURCE"] + cflags
link_args = list(libs) + ["-lpthread", "-lm"]  # -lm: fma, frexp (tensor_convert.c)
if os.environ.get("CORTEX_STRICT") == "1":
    compile_args.append("-Werror")
if os.environ.get("CORTEX_DEBUG_ALLOC") == "1":
    # live-allocation counters per kind (csrc/alloc_count.h), read by _core._alloc_counts()
    compile_args.append("-DCORTEX_ALLOC_COUNTERS")
if os.environ.get("CORTEX_DEBUG") == "1":
    compile_args += ["-O0", "-g3", "-UNDEBUG"]
sanitize = os.environ.get("CORTEX_SANITIZE")
if sanitize:
    compile_args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    link_args += [f"-fsanitize={sanitize}"]

setup(
    ext_modules=[
        Extension(
            "cortex_runtime._core",
            sources=sorted(glob.glob("csrc/*.c")),
            include_dirs=["csrc"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ],
)
