#!/usr/bin/env python3
"""Small OCI images for the test node, made from Debian's busybox-static: no registry, no network.

    oci-images.py BUSYBOX OUTDIR

writes OUTDIR/<name>.tar, each an OCI image layout (oci-layout, index.json, blobs/) that
`ctr -n k8s.io images import` takes, named by the index's `io.containerd.image.name` annotation:

    kiln.local/busybox:1   busybox with its applets linked in /bin (sh, sleep, httpd, ...)
    kiln.local/busybox:2   the same files under another label: a new image to roll out to
    kiln.local/pause:1     the pod sandbox: a shell that sleeps and exits on SIGTERM

Everything is deterministic (fixed times, sorted entries, uncompressed layers), so the same
busybox binary gives the same digests on every machine.
"""

import hashlib
import io
import json
import os
import sys
import tarfile

APPLETS = [
    "sh", "sleep", "httpd", "echo", "cat", "true", "false", "ls", "env", "date", "wget",
    "mkdir", "rm", "touch", "test", "[", "kill", "nc", "hostname", "id", "ps",
]


def tar_bytes(members):
    """A tar (ustar) of (TarInfo, bytes or None) members, in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for info, data in members:
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def entry(name, kind, mode, data=None, link=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    if data is not None:
        info.size = len(data)
    if link is not None:
        info.linkname = link
    return info, data


def rootfs(busybox):
    members = [
        entry("bin", tarfile.DIRTYPE, 0o755),
        entry("bin/busybox", tarfile.REGTYPE, 0o755, data=busybox),
    ]
    members += [entry("bin/" + a, tarfile.SYMTYPE, 0o777, link="busybox") for a in sorted(APPLETS)]
    members += [
        entry("etc", tarfile.DIRTYPE, 0o755),
        entry("etc/passwd", tarfile.REGTYPE, 0o644,
              data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        entry("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\nnogroup:x:65534:\n"),
        entry("tmp", tarfile.DIRTYPE, 0o1777),
        entry("www", tarfile.DIRTYPE, 0o755),
        entry("www/index.html", tarfile.REGTYPE, 0o644, data=b"kiln test node\n"),
    ]
    return tar_bytes(members)


def blob(blobs, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def image(name, layer, entrypoint, cmd, label):
    blobs = {}
    layer_digest = blob(blobs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "WorkingDir": "/",
            "Labels": {"dev.kiln.test-image": label},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/oci-images.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob(blobs, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": len(layer),
        }],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = blob(blobs, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": len(manifest_bytes),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
            },
        }],
    }
    members = [
        entry("oci-layout", tarfile.REGTYPE, 0o644, data=b'{"imageLayoutVersion":"1.0.0"}'),
        entry("index.json", tarfile.REGTYPE, 0o644,
              data=json.dumps(index, sort_keys=True, separators=(",", ":")).encode()),
        entry("blobs", tarfile.DIRTYPE, 0o755),
        entry("blobs/sha256", tarfile.DIRTYPE, 0o755),
    ]
    for digest in sorted(blobs):
        members.append(entry("blobs/sha256/" + digest.split(":")[1], tarfile.REGTYPE, 0o644,
                             data=blobs[digest]))
    return tar_bytes(members), manifest_digest


def main():
    busybox_path, out = sys.argv[1], sys.argv[2]
    with open(busybox_path, "rb") as f:
        layer = rootfs(f.read())
    os.makedirs(out, exist_ok=True)
    pause = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]
    for file, name, entrypoint, cmd, label in [
        ("busybox-1", "kiln.local/busybox:1", None, ["sh"], "1"),
        ("busybox-2", "kiln.local/busybox:2", None, ["sh"], "2"),
        ("pause-1", "kiln.local/pause:1", pause, None, "pause"),
    ]:
        data, digest = image(name, layer, entrypoint, cmd, label)
        with open(os.path.join(out, file + ".tar"), "wb") as f:
            f.write(data)
        print(name, digest)


if __name__ == "__main__":
    main()
