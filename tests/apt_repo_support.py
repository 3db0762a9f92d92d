"""What the private-repository suites share: a synthetic base dpkg status and the resolver option that
keeps its closure small (the real dwh closure, ~650 packages, is left to the end-to-end run).

The base has one installed package (base-files at an old version, so the base system has a pending
upgrade), and `pkgCacheGen::Essential "none"` keeps apt from pulling the whole essential set into the
closure of a base that lacks it (a real base image has it installed).
"""

from __future__ import annotations

BASE_STATUS = """\
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 340
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Version: 12.4
Description: Debian base system miscellaneous files

"""
SMALL_BASE_OPTIONS = ('pkgCacheGen::Essential "none";',)
