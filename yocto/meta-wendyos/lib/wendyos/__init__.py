# Helpers for meta-wendyos, importable from metadata as wendyos.<module>.
BBIMPORTS = ["partitions", "rauc", "skip", "version"]
