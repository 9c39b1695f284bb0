"""What a LAVA job downloads: the kernel Image and the project's initramfs
(the guest programs and selftests of the job, the KVM probe, guest_lib.sh
and the cell's scripts as steps/N.sh), and the URLs the lab reaches them by.

A dispatcher on this machine reads file:// URLs.  A remote lab downloads
over HTTP(S): the target file names a directory the user publishes (a web
server's document root, an object store mounted or synced) and the URL
prefix it is served under; the files are copied there under names made of
their content hash, so a lab's cache never serves a stale file.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.target.job import GuestJob
from orchestrator.target.lava.render import GUEST_LIB, step_files
from orchestrator.vm.image import build_image, sha256_of
from orchestrator.vm.nested_kvm import PROBE_GUEST_PATH, build_kvm_probe

GUEST_LIB_SOURCE = Path(__file__).with_name("guest_lib.sh")


@dataclass(frozen=True)
class Publish:
    """Where a remote lab downloads from: files copied into `directory` are
    served at `url_prefix` + name.  None: file:// URLs (a local dispatcher)."""
    directory: Path
    url_prefix: str


@dataclass(frozen=True)
class Artifacts:
    kernel: Path
    initramfs: Path
    kernel_url: str
    initramfs_url: str


def job_files(job: GuestJob, workdir: Path) -> dict[str, Path]:
    """Guest path -> host file for the initramfs: the job's files, the KVM probe
    (as the local target adds it), the guest library and the scripts."""
    steps = workdir / "steps"
    steps.mkdir(parents=True, exist_ok=True)
    files = dict(job.files)
    files.setdefault(PROBE_GUEST_PATH, build_kvm_probe())
    files[GUEST_LIB] = GUEST_LIB_SOURCE
    for guest, text in step_files(job).items():
        host = steps / Path(guest).name
        host.write_text(text)
        files[guest] = host
    return files


def _publish(src: Path, name: str, pub: Publish) -> str:
    dest = pub.directory / name
    if not (dest.is_file() and dest.stat().st_size == src.stat().st_size):
        tmp = dest.with_name(f".{name}.{os.getpid()}")
        try:
            os.link(src, tmp)  # same file system: no copy
        except OSError:
            shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        tmp.replace(dest)
    return pub.url_prefix.rstrip("/") + "/" + name


def prepare(job: GuestJob, workdir: Path, publish: Publish | None = None) -> Artifacts:
    if not job.kernel_image.is_file():
        raise UserError(f"kernel image not found: {job.kernel_image}", hint="build the kernel first")
    image = build_image(extra=job_files(job, workdir))
    kernel = job.kernel_image.resolve()
    initramfs = image.path.resolve()
    if publish is None:
        return Artifacts(kernel, initramfs, kernel.as_uri(), initramfs.as_uri())
    if not publish.directory.is_dir():
        raise UserError(f"the artifacts directory {publish.directory} does not exist",
                        hint="create it and serve it over HTTP at the target file's url_prefix")
    kname = f"Image-{sha256_of(kernel)[:20]}"
    return Artifacts(kernel, initramfs, _publish(kernel, kname, publish), _publish(initramfs, initramfs.name, publish))
