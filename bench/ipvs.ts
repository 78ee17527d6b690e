/**
 * IPVS benchmarks (issue 13), measured in the VM tier's guest because this machine's kernel has no IPVS:
 * boots the Debian 6.1 kernel under qemu (TCG, tests/vm/_vm.ts), runs bench/_ipvs_guest.ts there and
 * writes bench/results/ipvs.md. TCG emulates the CPU in software, so absolute times are many times a real
 * machine's: every figure is reported with its reference measured in the same guest run, and the targets
 * are read as ratios (programming) or against that reference (one change).
 *
 *   deno run -A bench/ipvs.ts [--services 10000] [--dests 10] [--rounds 3] [--changes 50] [--no-single]
 */
import { parseArgs } from "node:util";
import { runGuest } from "../tests/vm/_vm.ts";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "10000" },
    dests: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    changes: { type: "string", default: "50" },
    "no-single": { type: "boolean", default: false },
    /** Print the result instead of writing bench/results/ipvs.md (trial runs at small sizes). */
    "dry-run": { type: "boolean", default: false },
  },
});

interface GuestResult {
  kernel: string;
  services: number;
  dests: number;
  rounds: number;
  program: { ffiBatch: number[]; ipvsadmRestore: number[]; ffiSingle: number[] };
  cold: { ms: number; breakdown: Record<string, { calls: number; ms: number }> };
  change: {
    syncMs: number[];
    eventMs: number[];
    reasons: string[];
    breakdown: Record<string, { calls: number; ms: number }>;
  };
  ref: { rawApply: number[]; ipvsadmDelAdd: number[]; ipvsadmEdit: number[] };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}
const median = (xs: number[]) => quantile(xs, 0.5);
const f = (n: number, d = 1) => n.toFixed(d);

const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
const run = await runGuest([{
  command: [
    Deno.execPath(),
    "run",
    "-A",
    "bench/_ipvs_guest.ts",
    `--services=${values.services}`,
    `--dests=${values.dests}`,
    `--rounds=${values.rounds}`,
    `--changes=${values.changes}`,
    ...(values["no-single"] ? ["--no-single"] : []),
  ],
}], { timeoutMs: 5_400_000, log: (s) => console.error(`vm: ${s}`), echoConsole: true });
const out = run.outputs[0] ?? "";
if (run.exitCodes[0] !== 0) {
  console.error(out);
  throw new Error(`the guest benchmark exited ${run.exitCodes[0]} (its console is above)`);
}
const r = JSON.parse(out.trim().split("\n").at(-1)!) as GuestResult;
const loadAfter = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");

const ours = median(r.program.ffiBatch);
const theirs = median(r.program.ipvsadmRestore);
const ops = r.services * (1 + r.dests);
const syncP50 = median(r.change.syncMs);
const syncP99 = quantile(r.change.syncMs, 0.99);
const evP50 = median(r.change.eventMs);
const evP99 = quantile(r.change.eventMs, 0.99);
const rawP50 = median(r.ref.rawApply);
const delAddP50 = median(r.ref.ipvsadmDelAdd);
const editP50 = median(r.ref.ipvsadmEdit);
const n = r.change.syncMs.length;
const svc = r.services.toLocaleString("en-US");
const spent = (b: Record<string, { calls: number; ms: number }>) =>
  Object.entries(b).sort((x, y) => y[1].ms - x[1].ms).map(([k, v]) => `\`${k}\` ${v.calls}× ${v.ms} ms`)
    .join(", ");

const rows = [
  `| programming ${svc} Services × ${r.dests} destinations (ms; ffi \`apply\` vs \`ipvsadm --restore\`) | ${
    f(ours, 0)
  } | ${f(theirs, 0)} | ${f(ours / theirs, 2)} | <= 0.50 |`,
  `| programming rate (changes/s; higher is better) | ${f(ops / ours * 1000, 0)} | ${
    f(ops / theirs * 1000, 0)
  } | ${f(theirs / ours, 2)} | >= 2.00 |`,
  ...(r.program.ffiSingle.length
    ? [
      `| the same, ffi one call per change (a request + its ACK each; ms) | ${
        f(median(r.program.ffiSingle), 0)
      } | ${f(theirs, 0)} | ${f(median(r.program.ffiSingle) / theirs, 2)} |  |`,
    ]
    : []),
  `| one endpoint change at ${svc} Services: the backend's sync, p50 (ms) | ${f(syncP50)} | ${f(rawP50)} | ${
    f(syncP50 / rawP50, 1)
  } | < 10 ms |`,
  `| the same, p99 (ms) | ${f(syncP99)} | ${f(quantile(r.ref.rawApply, 0.99))} | ${
    f(syncP99 / quantile(r.ref.rawApply, 0.99), 1)
  } |  |`,
  `| the same, event to synced p50 / p99 (ms) | ${f(evP50)} / ${f(evP99)} | ${f(rawP50)} | ${
    f(evP50 / rawP50, 1)
  } |  |`,
  `| the same change with \`ipvsadm -d\` + \`ipvsadm -a\` (two processes), p50 (ms) | ${f(syncP50)} | ${
    f(delAddP50)
  } | ${f(syncP50 / delAddP50, 2)} |  |`,
  `| \`ipvsadm -e\` (one weight edit, one process), p50 (ms) | — | ${f(editP50)} |  |  |`,
  `| cold sync of ${svc} Services × ${r.dests} endpoints through the backend (ms; vs \`ipvsadm --restore\`) | ${
    f(r.cold.ms, 0)
  } | ${f(theirs, 0)} | ${f(r.cold.ms / theirs, 2)} |  |`,
];

const text = `## IPVS: programming through ffi/ipvs.ts, and one endpoint change through the IPVS backend

Measured in the VM tier's guest (kernel ${r.kernel} under qemu TCG, 2 vCPUs emulated on this machine's 2
shared cores; load average ${load} before, ${loadAfter} after: the machine was shared with other work), because
this machine's kernel has no IPVS. TCG makes every absolute time several times a real machine's, so each
figure stands beside its reference from the same guest run; ratio = ours / reference for times, reference /
ours for rates.

| measure | ours | reference | ratio | target |
| --- | --- | --- | --- | --- |
${rows.join("\n")}

Programming: medians of ${r.rounds} round(s) (alternating which goes first), each measurement in a fresh
network namespace (after a flush the kernel keeps deleted destinations in a trash list it scans on every add);
every variant's result checked (${svc} services, ${
  (r.services * r.dests).toLocaleString("en-US")
} destinations).
Ours = \`IpvsNetlink.apply\` of the ${
  ops.toLocaleString("en-US")
} changes (many messages per sendto, no ACK per
message, a fence per 256 KiB chunk), timed in the guest's Deno process; reference = \`ipvsadm -R\` of the same
set as restore text, timed around the child (its start included). One endpoint change: ${n} EndpointSlice
updates, each replacing one endpoint of one Service, to \`IpvsProxy\` (real IPVS, nftables, rtnetlink, sysctl,
conntrack; sync reasons: ${r.change.reasons.join(", ")}), each checked in the kernel afterwards; "sync" is the
backend's sync function from start to end, "event to synced" from the EndpointSlice update to its end;
reference = the same kernel change (delete the old destination, add the new one) as one raw \`apply\`, median
of ${r.ref.rawApply.length}. The < 10 ms target is absolute; under TCG compare the ratio to the raw change.
Time inside the backend's kernel-facing calls (count, total): cold sync: ${spent(r.cold.breakdown)}; the ${n}
changes: ${spent(r.change.breakdown)}.
Booted in ${f(run.bootSeconds)} s, whole run ${f(run.totalSeconds, 0)} s. Written by bench/ipvs.ts.
`;

if (values["dry-run"]) {
  console.log(text);
} else {
  const path = new URL("./results/ipvs.md", import.meta.url);
  await Deno.writeTextFile(path, text);
  console.log(text);
  console.error(`wrote ${path.pathname}`);
}
