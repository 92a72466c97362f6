"""The ELF closure: reading ELF files, glibc ld.so's search rules, and ``/etc/ld.so.cache``."""
