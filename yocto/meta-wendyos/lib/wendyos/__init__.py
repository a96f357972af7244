# Helpers for meta-wendyos, importable from metadata as wendyos.<module>.
BBIMPORTS = ["agent", "partitions", "rauc", "skip", "version"]
