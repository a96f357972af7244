"""The agent's Cargo features, from the repository's image/agent-features.

image/agent-features is the one list of the wendy-agent features every image
ships, for both image builders: scripts/build-agent passes it to cargo, and
wendy-agent.bb takes its PACKAGECONFIG from here (each feature is a
PACKAGECONFIG flag of the same name, over --no-default-features).
"""

import os

# The distro feature each image feature needs: its runtime comes from the
# layer that the distro feature turns on (meta-rauc, meta-virtualization).
NEEDS_DISTRO_FEATURE = {
    "rauc": "rauc",
    "apps": "virtualization",
}


def features_path(d):
    return os.path.join(d.getVar("WENDYOS_SRC_DIR"), "image", "agent-features")


def image_features(d):
    """The features of image/agent-features, in file order."""
    import bb.parse

    path = features_path(d)
    # Re-parse the recipe whenever the list changes.
    bb.parse.mark_dependency(d, path)
    features = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            features.extend(line.split("#", 1)[0].split())
    return features


def packageconfig(d):
    """image/agent-features less those whose distro feature is off."""
    distro = (d.getVar("DISTRO_FEATURES") or "").split()
    kept = []
    for feature in image_features(d):
        if feature not in NEEDS_DISTRO_FEATURE:
            raise ValueError("%s: feature %s has no entry in lib/wendyos/agent.py's NEEDS_DISTRO_FEATURE"
                             % (features_path(d), feature))
        if NEEDS_DISTRO_FEATURE[feature] in distro:
            kept.append(feature)
    return " ".join(kept)
