"""Prepare the test machine once, into the cache directory.

What it needs, all from Debian's archive with the ordinary clients:
  - QEMU 7.2 built from Debian's own source package, with the patches in hw/qemu/ (hw/README.md
    says why stock qemu-system-x86 will not do), plus the firmware of qemu-system-data and seabios;
  - Debian's kernel: the package linux-image-amd64 depends on, unpacked with dpkg -x; only
    vmlinuz and the modules the machine loads (kvm_amd, virtio-pci, 9p and what they need) are kept;
  - an initramfs: busybox, those modules and hw/init.

Every step checks what the cache already holds and skips itself, so a second prepare takes well
under a second.  QEMU is rebuilt when a patch changes; the kernel is resolved once and then kept
(delete cache/kernel to take a newer one).
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
PACKAGES = {  # Debian package -> a file it provides, to tell whether it is installed
    "qemu-system-data": "/usr/share/qemu/linuxboot_dma.bin",
    "seabios": "/usr/share/seabios/bios-256k.bin",
    "busybox-static": "/bin/busybox",
    "kmod": "/usr/sbin/depmod",
    "cpio": "/usr/bin/cpio",
}
BUILD_PACKAGES = {  # what building QEMU takes
    "gcc": "/usr/bin/gcc", "pkg-config": "/usr/bin/pkg-config", "ninja-build": "/usr/bin/ninja",
    "meson": "/usr/bin/meson", "flex": "/usr/bin/flex", "bison": "/usr/bin/bison",
    "dpkg-dev": "/usr/bin/dpkg-source", "libglib2.0-dev": "/usr/include/glib-2.0/glib.h",
    "libpixman-1-dev": "/usr/include/pixman-1/pixman.h", "libfdt-dev": "/usr/include/libfdt.h",
    "zlib1g-dev": "/usr/include/zlib.h", "libcap-ng-dev": "/usr/include/cap-ng.h",
    "libattr1-dev": "/usr/include/attr/attributes.h", "patch": "/usr/bin/patch",
}
QEMU_PATCHES = ("idt64-error-code.patch", "icebp.patch", "ret-stack-privilege.patch", "tss-busy.patch")
QEMU_CONFIGURE = ("--target-list=x86_64-softmmu", "--without-default-features", "--enable-tcg",
                  "--enable-virtfs", "--enable-attr", "--enable-cap-ng", "--enable-fdt=system",
                  "--disable-docs", "--disable-werror")
MODULES = ("kvm_amd", "virtio_pci", "9pnet_virtio", "9p")


def cache_dir():
    env = os.environ.get("LGUEST_HW_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "lguest-kvm" / "hw"


def log(msg):
    print(f"hw prepare: {msg}", flush=True)


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_packages(packages):
    missing = [p for p, f in packages.items() if not os.path.exists(f)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"hw prepare: missing Debian packages {' '.join(missing)}; as root: "
                 f"apt-get install --no-install-recommends {' '.join(missing)}")
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run("apt-get", "-qq", "update", env=env)
    run("apt-get", "-qq", "install", "-y", "--no-install-recommends", *missing, env=env,
        stdout=subprocess.DEVNULL)


def qemu_key():
    h = hashlib.sha256(" ".join(QEMU_CONFIGURE).encode())
    for name in QEMU_PATCHES:
        h.update((HERE / "qemu" / name).read_bytes())
    return h.hexdigest()


def apt_source(workdir, package):
    """Download and unpack Debian's source package into workdir/src, through a private apt
    configuration whose deb-src lines are made from this machine's own apt sources (/etc untouched)."""
    apt = workdir / "apt"
    (apt / "lists" / "partial").mkdir(parents=True)
    (apt / "cache").mkdir()
    (apt / "parts").mkdir()
    sources = []
    for f in sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*.sources")):
        sources.append(f.read_text().replace("Types: deb\n", "Types: deb-src\n"))
    (apt / "parts" / "src.sources").write_text("\n".join(sources))
    lines = []
    for f in [pathlib.Path("/etc/apt/sources.list"),
              *sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*.list"))]:
        lines += f.read_text().splitlines() if f.exists() else []
    (apt / "sources.list").write_text("".join(ln.replace("deb ", "deb-src ", 1) + "\n"
                                              for ln in lines if ln.startswith("deb ")))
    opts = ["-o", f"Dir::Etc::sourcelist={apt / 'sources.list'}",
            "-o", f"Dir::Etc::sourceparts={apt / 'parts'}",
            "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", "APT::Sandbox::User=root"]
    run("apt-get", *opts, "-qq", "update")
    run("apt-get", *opts, "-qq", "source", "--download-only", package, cwd=workdir,
        stderr=subprocess.DEVNULL)
    dsc = next(workdir.glob(f"{package}_*.dsc"))
    run("dpkg-source", "-x", dsc.name, "src", cwd=workdir, stdout=subprocess.DEVNULL)
    return workdir / "src", dsc.name


def ensure_qemu(cache):
    """cache/qemu-system-x86_64: Debian's QEMU source with hw/qemu/*.patch, TCG only, x86_64."""
    binary, keyfile = cache / "qemu-system-x86_64", cache / "qemu.key"
    key = qemu_key()
    if binary.is_file() and keyfile.is_file() and keyfile.read_text().split()[0] == key:
        return binary
    ensure_packages(BUILD_PACKAGES)
    log("building QEMU from Debian's source package (a few minutes)")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src, dsc = apt_source(pathlib.Path(tmp), "qemu")
        for name in QEMU_PATCHES:
            run("patch", "-s", "-p1", "-i", str(HERE / "qemu" / name), cwd=src)
        build = src / "build"
        build.mkdir()
        run("../configure", *QEMU_CONFIGURE, cwd=build, stdout=subprocess.DEVNULL)
        run("ninja", f"-j{os.cpu_count() or 1}", "qemu-system-x86_64", cwd=build,
            stdout=subprocess.DEVNULL)
        shutil.copy2(build / "qemu-system-x86_64", cache / "qemu-system-x86_64.new")
        os.replace(cache / "qemu-system-x86_64.new", binary)
    keyfile.write_text(f"{key} {dsc}\n")
    log(f"QEMU built in {time.monotonic() - t0:.0f} s from {dsc}")
    return binary


def kernel_version():
    """The ABI name of Debian's current kernel, e.g. 6.1.0-56-amd64, from linux-image-amd64."""
    for attempt in (0, 1):
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            word = line.split(":", 1)[-1].strip()
            if line.strip().startswith("Depends:") and word.startswith("linux-image-"):
                return word[len("linux-image-"):]
        if attempt == 0 and os.geteuid() == 0:
            run("apt-get", "-qq", "update")                 # no package lists yet
    sys.exit("hw prepare: apt-cache cannot say which kernel linux-image-amd64 depends on")


def module_closure(moddir, wanted):
    """The .ko paths (relative to moddir) of the wanted modules and everything they depend on,
    dependencies first."""
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {pathlib.Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order, seen = [], set()

    def visit(path):
        if path not in seen:
            seen.add(path)
            for d in deps[path]:
                visit(d)
            order.append(path)
    for name in wanted:
        visit(by_name[name])
    return order


def ensure_kernel(cache):
    """cache/kernel: vmlinuz and lib/modules/KV with the modules the machine loads."""
    kdir = cache / "kernel"
    if (kdir / "version").is_file():
        return kdir, (kdir / "version").read_text().strip()
    kv = kernel_version()
    log(f"fetching Debian's kernel {kv}")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tmp = pathlib.Path(tmp)
        for pkg in (f"linux-image-{kv}-unsigned", f"linux-image-{kv}"):
            if subprocess.run(["apt-get", "-qq", "download", pkg], cwd=tmp,
                              stderr=subprocess.DEVNULL).returncode == 0:
                break
        else:
            sys.exit(f"hw prepare: cannot download linux-image-{kv}(-unsigned)")
        deb = next(tmp.glob("*.deb"))
        run("dpkg", "-x", str(deb), str(tmp / "x"))
        run("depmod", "-b", str(tmp / "x"), kv)
        src = tmp / "x" / "lib" / "modules" / kv
        new = tmp / "kernel"
        dst = new / "lib" / "modules" / kv
        for rel in module_closure(src, MODULES):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
        for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            if (src / f).exists():
                shutil.copy2(src / f, dst / f)
        run("depmod", "-b", str(new), kv)
        shutil.copy2(tmp / "x" / "boot" / f"vmlinuz-{kv}", new / "vmlinuz")
        (new / "version").write_text(kv + "\n")
        os.replace(new, kdir)
    return kdir, kv


def initramfs_key(kdir):
    h = hashlib.sha256()
    for p in (HERE / "init", pathlib.Path("/bin/busybox"), kdir / "version"):
        h.update(p.read_bytes())
    return h.hexdigest()


def ensure_initramfs(cache, kdir):
    """cache/initrd.gz: busybox, the modules and hw/init; rebuilt when any of them changes."""
    initrd, keyfile = cache / "initrd.gz", cache / "initrd.key"
    key = initramfs_key(kdir)
    if initrd.is_file() and keyfile.is_file() and keyfile.read_text() == key:
        return initrd
    log("building the initramfs")
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = pathlib.Path(tmp) / "root"
        for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "host"):
            (root / d).mkdir(parents=True)
        shutil.copy2("/bin/busybox", root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        shutil.copytree(kdir / "lib", root / "lib", symlinks=True)
        shutil.copy2(HERE / "init", root / "init")
        (root / "init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
        archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"], cwd=root,
                                 input=files, capture_output=True, check=True).stdout
        tmp_initrd = pathlib.Path(tmp) / "initrd.gz"
        with open(tmp_initrd, "wb") as out:
            run("gzip", "-1", "-n", input=archive, stdout=out)
        os.replace(tmp_initrd, initrd)
    keyfile.write_text(key)
    return initrd


def prepare():
    """Make sure the cache holds a bootable machine; return (qemu, kernel, initrd) paths."""
    t0 = time.monotonic()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    ensure_packages(PACKAGES)
    qemu = ensure_qemu(cache)
    kdir, kv = ensure_kernel(cache)
    initrd = ensure_initramfs(cache, kdir)
    log(f"ready in {time.monotonic() - t0:.1f} s: {cache} (kernel {kv})")
    return qemu, kdir / "vmlinuz", initrd
