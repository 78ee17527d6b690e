/**
 * The VM test tier: boots a stock Debian 6.1 kernel under qemu (TCG, `microvm`) to run the tests that need
 * kernel parts this machine's kernel lacks (IPVS, IPIP/FoU, dummy; ../../../shared/ENVIRONMENT.md).
 *
 * The guest sees the host's whole root read-only over 9p under a tmpfs overlay, so it runs the same Deno,
 * the same checkout and the same tools (`ip`, `nft`, `ipvsadm`) as the host, with the Debian kernel's
 * modules bind-mounted at /lib/modules and busybox as `modprobe` for the kernel's automatic module loading.
 * One boot runs every guest test file of a run (`deno test --junit-path` per file); the JUnit reports come
 * back over a virtio-serial port and become ordinary test steps on the host.
 *
 * Everything is fetched and cached under `.cache/vm/` (git-ignored) on first use: the kernel package with
 * `apt-get download` + `dpkg -x`, its modules indexed with `busybox depmod` (the package ships no
 * modules.dep), the compressed kernel unpacked to the ELF `vmlinux` with `xz` (qemu boots that through
 * its PVH entry in about 3 s; the bzImage would spend 15 s decompressing itself under TCG). The initramfs
 * is written here as a newc archive: busybox-static, the virtio/9p/overlay modules and `/init`.
 *
 * Also a script: `deno run -A tests/vm/_vm.ts FILE [FILTER]` boots once and prints the guest's console;
 * `deno run -A tests/vm/_vm.ts --run CMD ARGS…` runs one command in the guest and prints its stdout.
 */

const REPO = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
/** The cache directory (override with KRT_VM_CACHE, e.g. to share one download between checkouts). */
export const CACHE = Deno.env.get("KRT_VM_CACHE") ?? `${REPO}/.cache/vm`;

/** Modules the initramfs loads before it can mount the host's root, in dependency order. */
const BOOT_MODULES = [
  "kernel/drivers/virtio/virtio_ring.ko",
  "kernel/drivers/virtio/virtio.ko",
  "kernel/drivers/virtio/virtio_mmio.ko",
  "kernel/drivers/char/virtio_console.ko",
  "kernel/net/9p/9pnet.ko",
  "kernel/net/9p/9pnet_virtio.ko",
  "kernel/fs/netfs/netfs.ko",
  "kernel/fs/fscache/fscache.ko",
  "kernel/fs/9p/9p.ko",
  "kernel/fs/overlayfs/overlay.ko",
];

/** Host tools the tier needs (Debian packages: qemu-system-x86, busybox-static, xz-utils, apt, dpkg). */
export const VM_TOOLS = ["qemu-system-x86_64", "busybox", "xz", "apt-get", "apt-cache", "dpkg"];

/** A fetched kernel: the bootable ELF and the module tree the guest mounts at /lib/modules/VERSION. */
export interface Kernel {
  version: string;
  vmlinux: string;
  modules: string;
}

async function sh(cmd: string[], opts: { cwd?: string; stdout?: "piped" | "null" } = {}): Promise<string> {
  const out = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: "null",
    stdout: opts.stdout ?? "piped",
    stderr: "piped",
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  }).output();
  if (!out.success) {
    throw new Error(`${cmd.join(" ")} exited ${out.code}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The newest `linux-image-6.1.0-N-amd64` package the apt mirror offers (the generic flavour: the cloud one
 * lacks 9p). Debian 12's own kernel series, so the modules match the tools on the host.
 */
async function newestKernelPackage(): Promise<string> {
  const out = await sh(["apt-cache", "search", "--names-only", "^linux-image-6\\.1\\.0-[0-9]+-amd64$"]);
  const names = out.split("\n").map((l) => l.split(" ")[0]!).filter((n) =>
    /^linux-image-6\.1\.0-\d+-amd64$/.test(n)
  );
  names.sort((a, b) => Number(a.split("-")[4]) - Number(b.split("-")[4]));
  const name = names.at(-1);
  if (!name) {
    throw new Error(
      "apt-cache finds no linux-image-6.1.0-*-amd64 package (is this Debian 12 after apt-get update?)",
    );
  }
  return name;
}

/** Fetches (once) and returns the guest kernel. The `ready` file is written last, so a killed fetch retries. */
export async function ensureKernel(log: (s: string) => void = () => {}): Promise<Kernel> {
  const dir = `${CACHE}/kernel`;
  const ready = `${dir}/ready`;
  if (await exists(ready)) {
    const version = (await Deno.readTextFile(ready)).trim();
    return { version, vmlinux: `${dir}/vmlinux`, modules: `${dir}/root/lib/modules/${version}` };
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${dir}/deb`, { recursive: true });
  const pkg = await newestKernelPackage();
  log(`fetching ${pkg} with apt-get download`);
  await sh(["apt-get", "download", "-q", pkg], { cwd: `${dir}/deb` });
  const deb = [...Deno.readDirSync(`${dir}/deb`)].find((e) => e.name.endsWith(".deb"));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${dir}/deb`);
  await sh(["dpkg", "-x", `${dir}/deb/${deb.name}`, `${dir}/root`]);
  await Deno.remove(`${dir}/deb`, { recursive: true });
  const version = pkg.replace(/^linux-image-/, "");
  // The kernel package ships no modules.dep/modules.alias (the postinst runs depmod): make them.
  await sh(["busybox", "depmod", "-b", `${dir}/root`, version]);
  await extractVmlinux(`${dir}/root/boot/vmlinuz-${version}`, `${dir}/vmlinux`);
  await Deno.writeTextFile(ready, `${version}\n`);
  log(`kernel ${version} cached in ${dir}`);
  return { version, vmlinux: `${dir}/vmlinux`, modules: `${dir}/root/lib/modules/${version}` };
}

/**
 * Unpacks the ELF kernel from a bzImage: the payload is an xz stream (Debian's CONFIG_KERNEL_XZ) starting
 * at its magic; `xz` stops at the stream's end and complains about the bytes after it, which is expected,
 * so success is judged by the output being an ELF file rather than by xz's exit status.
 */
async function extractVmlinux(bzImage: string, out: string): Promise<void> {
  const data = await Deno.readFile(bzImage);
  const magic = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
  let at = -1;
  for (let i = 0; i + magic.length <= data.length && at < 0; i++) {
    if (magic.every((b, j) => data[i + j] === b)) at = i;
  }
  if (at < 0) throw new Error(`${bzImage}: no xz payload found (not an xz-compressed kernel?)`);
  const child = new Deno.Command("xz", {
    args: ["-dc", "--single-stream"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  const writing = w.write(data.subarray(at)).then(() => w.close()).catch(() => {});
  const res = await child.output();
  await writing;
  const elf = res.stdout;
  if (elf.length < 1 << 20 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    throw new Error(`xz could not unpack ${bzImage}: ${new TextDecoder().decode(res.stderr).trim()}`);
  }
  await Deno.writeFile(out, elf);
}

/** One file of a newc ("070701") cpio archive. */
interface CpioEntry {
  name: string;
  mode: number;
  data?: Uint8Array;
}

/** Writes a newc cpio archive, the initramfs format the kernel unpacks (no compression needed). */
export function cpioNewc(entries: CpioEntry[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    size += b.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      parts.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  let ino = 1;
  for (const e of [...entries, { name: "TRAILER!!!", mode: 0 }]) {
    const data = e.data ?? new Uint8Array();
    const name = enc.encode(`${e.name}\0`);
    const fields = [ino++, e.mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    push(concat(enc.encode(`070701${fields.map(hex).join("")}`), name));
    if (data.length) push(data);
  }
  return concat(...parts);
}

function concat(...bufs: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(bufs.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of bufs) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

/**
 * `/init` of the initramfs (busybox sh). It mounts the host's root (9p, read-only) under a tmpfs overlay,
 * gives it fresh /proc, /sys, /dev, /run and /tmp (keeping the checkout and the cache visible when they live
 * under /tmp or /run, as a CI clone may), the kernel's modules and busybox as modprobe, finds the
 * virtio-serial port named "results", and switches root into it to run the run's guest script (`krt.script=`
 * on the kernel command line). It always ends with `reboot -f`, which `-no-reboot` turns into qemu exiting.
 */
function initScript(busybox: string): string {
  return `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /host /up /root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod "/mods/$m" || echo "krt-vm: insmod $m failed"; done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "\${w#*=}";; esac; done; }
script=$(arg krt.script); kver=$(arg krt.kver); kmods=$(arg krt.kmods)
fail() { echo "krt-vm: $*"; reboot -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /host || fail "9p mount failed"
mount -t tmpfs -o size=75% tmpfs /up && mkdir /up/u /up/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/up/u,workdir=/up/w /root || fail "overlay mount failed"
mount -t proc proc /root/proc
mount -t sysfs sys /root/sys
mount -t devtmpfs dev /root/dev
mkdir -p /root/dev/pts /root/dev/shm && mount -t devpts devpts /root/dev/pts && mount -t tmpfs shm /root/dev/shm
mount -t tmpfs run /root/run
mount -t tmpfs tmp /root/tmp
# A checkout or cache under /tmp or /run would be hidden by the fresh tmpfs just mounted there: give each
# its own writable overlay of the host's copy at the same path.
i=0
for d in $(arg krt.keep | tr , ' '); do
  case "$d" in /tmp/*|/run/*)
    i=$((i+1)); mkdir -p "/up/k$i/u" "/up/k$i/w" "/root$d"
    mount -t overlay overlay -o "lowerdir=/host$d,upperdir=/up/k$i/u,workdir=/up/k$i/w" "/root$d" || fail "overlay of $d failed";;
  esac
done
mount -t bpf bpf /root/sys/fs/bpf 2>/dev/null
mkdir -p "/root/lib/modules/$kver" && mount --bind "/root$kmods" "/root/lib/modules/$kver"
rm -f /root/usr/sbin/modprobe && ln -s ${busybox} /root/usr/sbin/modprobe
echo /usr/sbin/modprobe > /proc/sys/kernel/modprobe
port=
for p in /sys/class/virtio-ports/*; do [ "$(cat "$p/name")" = results ] && port="/dev/\${p##*/}"; done
[ -n "$port" ] || fail "no virtio-serial port named results"
umount /proc /sys /dev 2>/dev/null
exec switch_root /root /bin/sh -c '/bin/sh "$0" "$1"; echo "krt-vm: guest script exited $?"; exec ${busybox} reboot -f' "$script" "$port"
`;
}

/** Whether an ELF64 file names a dynamic loader (has a PT_INTERP program header). */
function hasInterpreter(elf: Uint8Array): boolean {
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 64 || v.getUint32(0) !== 0x7f454c46) return true;
  const phoff = Number(v.getBigUint64(0x20, true));
  const size = v.getUint16(0x36, true);
  const count = v.getUint16(0x38, true);
  for (let i = 0; i < count; i++) if (v.getUint32(phoff + i * size, true) === 3) return true;
  return false;
}

/** Builds the initramfs for a kernel (cached per kernel version and init script). */
export async function ensureInitramfs(kernel: Kernel): Promise<string> {
  const busybox = await sh(["sh", "-c", "command -v busybox"]).then((s) => s.trim());
  const init = initScript(busybox);
  const key = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(kernel.version + init));
  const tag = [...new Uint8Array(key).slice(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const path = `${CACHE}/initramfs-${tag}.cpio`;
  if (await exists(path)) return path;
  const bb = await Deno.readFile(busybox);
  if (hasInterpreter(bb)) {
    throw new Error(
      `${busybox} is dynamically linked: the initramfs needs busybox-static (apt-get install it)`,
    );
  }
  const entries: CpioEntry[] = [
    { name: "bin", mode: 0o40755 },
    { name: "bin/busybox", mode: 0o100755, data: bb },
    { name: "init", mode: 0o100755, data: new TextEncoder().encode(init) },
    { name: "mods", mode: 0o40755 },
  ];
  const order: string[] = [];
  for (const m of BOOT_MODULES) {
    const base = m.split("/").at(-1)!;
    entries.push({
      name: `mods/${base}`,
      mode: 0o100644,
      data: await Deno.readFile(`${kernel.modules}/${m}`),
    });
    order.push(base);
  }
  entries.push({
    name: "mods/order",
    mode: 0o100644,
    data: new TextEncoder().encode(order.join("\n") + "\n"),
  });
  const tmp = `${path}.tmp${Deno.pid}`;
  await Deno.writeFile(tmp, cpioNewc(entries));
  await Deno.rename(tmp, path);
  return path;
}

/** One guest test file, optionally narrowed with `deno test --filter`. */
export interface GuestTest {
  /** Path relative to the repository root. */
  file: string;
  filter?: string;
}

/** A command the guest runs instead of tests (golden captures); its stdout comes back verbatim. */
export interface GuestCommand {
  command: string[];
}

/** One test the guest ran, from its JUnit report. */
export interface GuestResult {
  file: string;
  name: string;
  status: "passed" | "failed" | "skipped";
  /** The failure text (message and stack) for a failed test. */
  message?: string;
}

/** What one boot produced. */
export interface GuestRun {
  kernel: string;
  /** Per entry of the plan: `deno test`'s exit code in the guest, or undefined if it never reported. */
  exitCodes: (number | undefined)[];
  /** Per entry: what it wrote to the results port (a JUnit report, or a command's stdout). */
  outputs: (string | undefined)[];
  results: GuestResult[];
  /** Seconds from qemu's start to the guest script starting, and to qemu exiting. */
  bootSeconds: number;
  totalSeconds: number;
  console: string;
}

/** Raised when the guest cannot boot or does not finish; carries the console's tail. */
export class VmError extends Error {
  constructor(message: string, readonly consoleTail: string) {
    super(`${message}\n--- guest console (last lines) ---\n${consoleTail}`);
    this.name = "VmError";
  }
}

const MARK = "@@KRT-VM-";

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The script the guest runs chrooted in the overlay root: one `deno test` per entry, reports to `$1`. */
function guestScript(plan: (GuestTest | GuestCommand)[]): string {
  const env: Record<string, string> = {
    HOME: Deno.env.get("HOME") ?? "/root",
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
    KRT_IN_VM: "1",
  };
  const denoDir = Deno.env.get("DENO_DIR");
  if (denoDir) env.DENO_DIR = denoDir;
  const lines = [
    "#!/bin/sh",
    `exec 3>"$1"`,
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`),
    `cd ${shellQuote(REPO)} || exit 1`,
    "ip link set lo up",
    // A machine has a name; the agent falls back to it without NODE_NAME (e.g. for --cleanup-config).
    "hostname krt-vm",
    // The ipip/fou modules otherwise add a fallback `tunl0` to every namespace a test makes (tests list a
    // namespace's links exactly, and an unparameterised `ip link add … type ipip` would clash with it).
    "sysctl -qw net.core.fb_tunnels_only_for_init_net=1",
    `echo "${MARK}BOOTED" >&3`,
  ];
  plan.forEach((t, i) => {
    if ("command" in t) {
      lines.push(
        `${t.command.map(shellQuote).join(" ")} </dev/null >/tmp/out-${i}`,
        `rc=$?`,
        `echo "${MARK}BEGIN ${i} $rc" >&3`,
        `cat /tmp/out-${i} >&3`,
        `echo "${MARK}END ${i}" >&3`,
      );
      return;
    }
    const args = [Deno.execPath(), "test", "-A", "--no-check", `--junit-path=/tmp/junit-${i}.xml`, t.file];
    if (t.filter !== undefined) args.push("--filter", t.filter);
    lines.push(
      `echo "krt-vm: running ${t.file}${t.filter ? ` (filter ${t.filter.replaceAll('"', "")})` : ""}"`,
      `${args.map(shellQuote).join(" ")} </dev/null 2>&1`,
      `rc=$?`,
      `echo "${MARK}BEGIN ${i} $rc" >&3`,
      `cat /tmp/junit-${i}.xml >&3 2>/dev/null`,
      `echo "${MARK}END ${i}" >&3`,
    );
  });
  lines.push(`echo "${MARK}DONE" >&3`, "");
  return lines.join("\n");
}

/**
 * The emulated CPU: `max`, every feature TCG can emulate, so V8 and openssl take their SSE4/AES code paths
 * (RSA key generation measured 2.5x faster than with the baseline `qemu64`). KRT_VM_CPU overrides it.
 */
const CPU = Deno.env.get("KRT_VM_CPU") ?? "max";

/** The host CPU's clock in kHz, for `tsc_early_khz` (without it TSC calibration hangs about half the boots). */
async function hostKhz(): Promise<number> {
  const info = await Deno.readTextFile("/proc/cpuinfo");
  const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(info)?.[1];
  if (!mhz) throw new Error("/proc/cpuinfo has no cpu MHz line");
  return Math.round(Number(mhz) * 1000);
}

/**
 * Boots the guest once and runs every entry of `plan` in it. Throws a VmError (with the console's tail) when
 * the guest does not boot, times out, or ends before reporting every entry.
 */
export async function runGuest(
  plan: (GuestTest | GuestCommand)[],
  opts: { timeoutMs?: number; log?: (s: string) => void; echoConsole?: boolean } = {},
): Promise<GuestRun> {
  const log = opts.log ?? (() => {});
  const kernel = await ensureKernel(log);
  const initrd = await ensureInitramfs(kernel);
  const runDir = await Deno.makeTempDir({ dir: await mkdirp(`${CACHE}/runs`), prefix: "run-" });
  try {
    const script = `${runDir}/guest.sh`;
    const results = `${runDir}/results`;
    await Deno.writeTextFile(script, guestScript(plan));
    await Deno.writeTextFile(results, "");
    const append = [
      "console=ttyS0",
      "quiet",
      "loglevel=4",
      `tsc_early_khz=${await hostKhz()}`,
      "tsc=reliable",
      "mitigations=off",
      "cryptomgr.notests",
      "panic=-1",
      `krt.script=${script}`,
      `krt.kver=${kernel.version}`,
      `krt.kmods=${kernel.modules}`,
      `krt.keep=${[REPO, CACHE].join(",")}`,
    ].join(" ");
    const started = performance.now();
    const child = new Deno.Command("qemu-system-x86_64", {
      args: [
        ...["-M", "microvm", "-accel", "tcg", "-cpu", CPU, "-m", "2048", "-smp", "2"],
        ...["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio"],
        ...["-kernel", kernel.vmlinux, "-initrd", initrd, "-append", append],
        ...["-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"],
        ...["-device", "virtio-9p-device,fsdev=hostroot,mount_tag=hostroot"],
        ...["-device", "virtio-serial-device"],
        ...["-chardev", `file,id=results,path=${results}`],
        ...["-device", "virtserialport,chardev=results,name=results"],
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let consoleText = "";
    let bootSeconds = NaN;
    const dec = new TextDecoder();
    const pump = async (s: ReadableStream<Uint8Array>) => {
      for await (const chunk of s) {
        const text = dec.decode(chunk, { stream: true });
        if (opts.echoConsole) await Deno.stderr.write(chunk);
        consoleText += text;
        if (consoleText.length > 4 << 20) consoleText = consoleText.slice(-(2 << 20));
      }
    };
    let timedOut = false;
    const timeoutMs = opts.timeoutMs ?? 900_000;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, timeoutMs);
    // Learn when the guest script started (the BOOTED mark) by watching the results file.
    const bootWatch = setInterval(async () => {
      if (!Number.isNaN(bootSeconds)) return;
      const text = await Deno.readTextFile(results).catch(() => "");
      if (text.includes(`${MARK}BOOTED`)) bootSeconds = (performance.now() - started) / 1000;
    }, 100);
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    clearTimeout(timer);
    clearInterval(bootWatch);
    const totalSeconds = (performance.now() - started) / 1000;
    const reported = await Deno.readTextFile(results);
    if (Number.isNaN(bootSeconds) && reported.includes(`${MARK}BOOTED`)) bootSeconds = totalSeconds;
    const tail = consoleText.split("\n").slice(-60).join("\n");
    if (timedOut) {
      throw new VmError(`the guest did not finish within ${timeoutMs / 1000} s (qemu killed)`, tail);
    }
    if (!reported.includes(`${MARK}BOOTED`)) {
      throw new VmError(`the guest never booted to its test script (qemu exit ${status.code})`, tail);
    }
    if (!reported.includes(`${MARK}DONE`)) {
      throw new VmError(
        `the guest stopped before reporting every test file (qemu exit ${status.code})`,
        tail,
      );
    }
    const parsed = parseReport(reported, plan);
    return { kernel: kernel.version, ...parsed, bootSeconds, totalSeconds, console: consoleText };
  } finally {
    await Deno.remove(runDir, { recursive: true }).catch(() => {});
  }
}

async function mkdirp(dir: string): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** Splits the results port's stream into per-entry JUnit reports and parses them. */
export function parseReport(
  text: string,
  plan: (GuestTest | GuestCommand)[],
): { exitCodes: (number | undefined)[]; outputs: (string | undefined)[]; results: GuestResult[] } {
  const exitCodes: (number | undefined)[] = plan.map(() => undefined);
  const outputs: (string | undefined)[] = plan.map(() => undefined);
  const results: GuestResult[] = [];
  const re = new RegExp(`${MARK}BEGIN (\\d+) (\\d+)\\n([\\s\\S]*?)${MARK}END \\1\\n`, "g");
  for (const m of text.matchAll(re)) {
    const i = Number(m[1]);
    const entry = plan[i];
    if (!entry) continue;
    exitCodes[i] = Number(m[2]);
    outputs[i] = m[3]!;
    if ("command" in entry) continue;
    for (const r of parseJunit(m[3]!)) {
      // deno's JUnit report lists tests a filter left out as skipped: drop those, keep real skips.
      if (entry.filter !== undefined && !matchesFilter(r.name, entry.filter)) continue;
      results.push({ ...r, file: entry.file });
    }
  }
  return { exitCodes, outputs, results };
}

/** `deno test --filter` semantics: `/re/` is a regular expression, anything else a substring. */
export function matchesFilter(name: string, filter: string): boolean {
  const re = /^\/(.*)\/$/.exec(filter);
  if (re) return new RegExp(re[1]!).test(name);
  return name.includes(filter);
}

function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#(\d+)|#x([0-9a-fA-F]+));/g, (_, name, dec, hex) => {
    if (dec) return String.fromCodePoint(Number(dec));
    if (hex) return String.fromCodePoint(parseInt(hex, 16));
    return ({ lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" } as Record<string, string>)[name]!;
  });
}

/** Parses `deno test --junit-path` output: one result per `<testcase>` (steps appear as "a > b"). */
export function parseJunit(xml: string): Omit<GuestResult, "file">[] {
  const out: Omit<GuestResult, "file">[] = [];
  const re = /<testcase name="([^"]*)"[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    const name = unescapeXml(m[1]!);
    const body = m[3] ?? "";
    const failure = /<failure(?: message="([^"]*)")?\s*(?:\/>|>([\s\S]*?)<\/failure>)/.exec(body);
    if (failure) {
      out.push({ name, status: "failed", message: unescapeXml(failure[2] ?? failure[1] ?? "failed") });
    } else if (/<skipped\s*\/?>/.test(body)) {
      out.push({ name, status: "skipped" });
    } else {
      out.push({ name, status: "passed" });
    }
  }
  return out;
}

if (import.meta.main && Deno.args[0] === "--run") {
  // `deno run -A tests/vm/_vm.ts --run CMD ARGS…`: runs one command in the guest, prints its stdout.
  const run = await runGuest([{ command: Deno.args.slice(1) }], {
    log: (s) => console.error(s),
    echoConsole: true,
  });
  await Deno.stdout.write(new TextEncoder().encode(run.outputs[0] ?? ""));
  console.error(`guest command exited ${run.exitCodes[0]}; ${run.totalSeconds.toFixed(1)} s`);
  Deno.exit(run.exitCodes[0] === 0 ? 0 : 1);
} else if (import.meta.main) {
  const [file, filter] = Deno.args;
  if (!file) {
    console.error("usage: deno run -A tests/vm/_vm.ts TEST_FILE [FILTER] | --run COMMAND ARGS…");
    Deno.exit(2);
  }
  const run = await runGuest([{ file, ...(filter ? { filter } : {}) }], {
    log: (s) => console.error(s),
    echoConsole: true,
  });
  for (const r of run.results) {
    console.log(`${r.status.padEnd(7)} ${r.name}${r.message ? `\n${r.message}` : ""}`);
  }
  console.log(
    `kernel ${run.kernel}: booted in ${run.bootSeconds.toFixed(1)} s, done in ${
      run.totalSeconds.toFixed(1)
    } s`,
  );
  Deno.exit(run.results.some((r) => r.status !== "passed") || run.exitCodes.some((c) => c !== 0) ? 1 : 0);
}
