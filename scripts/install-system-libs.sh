#!/usr/bin/env bash
# Installs the system libraries behind kiln's optional storage features: libhdf5-dev (feature
# `hdf5`) and libnetcdf-dev (feature `netcdf`). Debian/Ubuntu with apt; run as root (or with
# sudo). The default build needs neither. Exits 0 when they are already present.
set -euo pipefail
if pkg-config --exists hdf5 2>/dev/null && pkg-config --exists netcdf 2>/dev/null; then
    echo "libhdf5 $(pkg-config --modversion hdf5) and libnetcdf $(pkg-config --modversion netcdf) are installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install HDF5 and NetCDF-C development packages with your system's package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
# The package lists may be stale (libcurl's -dev package must match the installed libcurl).
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libhdf5-dev libnetcdf-dev pkg-config >/dev/null
echo "installed libhdf5 $(pkg-config --modversion hdf5) and libnetcdf $(pkg-config --modversion netcdf)"
