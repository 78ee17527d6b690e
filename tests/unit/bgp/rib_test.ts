import assert from "node:assert/strict";
import {
  comparePaths,
  LOCAL_SOURCE,
  LocRib,
  type Path,
  type PathSource,
  selectBest,
} from "../../../modules/router/bgp/rib.ts";
import { AS_SEQUENCE, AS_SET, type PathAttributes } from "../../../modules/router/bgp/types.ts";

const src = (id: string, opts: Partial<PathSource> = {}): PathSource => ({
  id,
  ebgp: true,
  routerId: id,
  address: id,
  rrClient: false,
  ...opts,
});
const path = (source: PathSource, a: Partial<PathAttributes> = {}): Path => ({
  source,
  attrs: { origin: 0, asPath: [{ type: AS_SEQUENCE, asns: [65001] }], nextHop: source.address, ...a },
  stale: false,
  since: 0,
});
const better = (a: Path, b: Path) => {
  assert.ok(comparePaths(a, b) < 0, "first path should win");
  assert.ok(comparePaths(b, a) > 0, "comparison is antisymmetric");
  assert.equal(selectBest([b, a]), a);
};

Deno.test("higher LOCAL_PREF wins over a shorter AS path", () => {
  better(
    path(src("10.0.0.2"), { localPref: 200, asPath: [{ type: AS_SEQUENCE, asns: [1, 2, 3] }] }),
    path(src("10.0.0.1"), { localPref: 100 }),
  );
});

Deno.test("a locally originated route wins over a learned one with equal LOCAL_PREF", () => {
  better(path(LOCAL_SOURCE, { asPath: [] }), path(src("10.0.0.1"), { asPath: [] }));
});

Deno.test("the shorter AS path wins, and an AS_SET counts as one", () => {
  better(
    path(src("10.0.0.2"), { asPath: [{ type: AS_SEQUENCE, asns: [1] }] }),
    path(src("10.0.0.1"), { asPath: [{ type: AS_SEQUENCE, asns: [1, 2] }] }),
  );
  better(
    path(src("10.0.0.2"), { asPath: [{ type: AS_SEQUENCE, asns: [1] }, { type: AS_SET, asns: [5, 6, 7] }] }),
    path(src("10.0.0.1"), { asPath: [{ type: AS_SEQUENCE, asns: [1, 2, 3] }] }),
  );
});

Deno.test("IGP origin beats EGP beats incomplete", () => {
  better(path(src("10.0.0.2"), { origin: 0 }), path(src("10.0.0.1"), { origin: 1 }));
  better(path(src("10.0.0.2"), { origin: 1 }), path(src("10.0.0.1"), { origin: 2 }));
});

Deno.test("lower MED wins only between paths from the same neighbour AS", () => {
  better(path(src("10.0.0.2"), { med: 5 }), path(src("10.0.0.1"), { med: 10 }));
  // Different neighbour AS: MED is skipped and the router id decides.
  const a = path(src("10.0.0.1"), { med: 50, asPath: [{ type: AS_SEQUENCE, asns: [65001] }] });
  const b = path(src("10.0.0.2"), { med: 1, asPath: [{ type: AS_SEQUENCE, asns: [65002] }] });
  better(a, b);
});

Deno.test("eBGP beats iBGP, then the lower router id, then the shorter cluster list, then the lower address", () => {
  better(path(src("10.0.0.9", { ebgp: true })), path(src("10.0.0.1", { ebgp: false })));
  better(path(src("10.0.0.5", { routerId: "1.1.1.1" })), path(src("10.0.0.1", { routerId: "2.2.2.2" })));
  // Router ids compare numerically, not as text: 9.0.0.1 < 10.0.0.1.
  better(path(src("10.0.0.5", { routerId: "9.0.0.1" })), path(src("10.0.0.1", { routerId: "10.0.0.1" })));
  // ORIGINATOR_ID stands in for the router id of reflected routes.
  better(
    path(src("10.0.0.5", { ebgp: false, routerId: "5.5.5.5" }), { originatorId: "1.0.0.1" }),
    path(src("10.0.0.1", { ebgp: false, routerId: "2.2.2.2" })),
  );
  better(
    path(src("10.0.0.5", { ebgp: false, routerId: "5.5.5.5" }), {
      originatorId: "1.0.0.1",
      clusterList: ["9.9.9.9"],
    }),
    path(src("10.0.0.1", { ebgp: false, routerId: "5.5.5.5" }), {
      originatorId: "1.0.0.1",
      clusterList: ["9.9.9.9", "8.8.8.8"],
    }),
  );
  better(path(src("10.0.0.1", { routerId: "7.7.7.7" })), path(src("10.0.0.2", { routerId: "7.7.7.7" })));
});

Deno.test("the Loc-RIB reports best-path changes only when the best actually changes", () => {
  const rib = new LocRib();
  const a = path(src("10.0.0.1"), { asPath: [{ type: AS_SEQUENCE, asns: [1, 2] }] });
  const b = path(src("10.0.0.2"), { asPath: [{ type: AS_SEQUENCE, asns: [1] }] });
  assert.deepEqual(rib.set("ipv4-unicast", "10.1.0.0/24", a), { before: undefined, after: a });
  assert.deepEqual(rib.set("ipv4-unicast", "10.1.0.0/24", b), { before: a, after: b });
  // A worse replacement of a non-best path changes nothing.
  assert.equal(rib.set("ipv4-unicast", "10.1.0.0/24", { ...a, attrs: { ...a.attrs, med: 9 } }), undefined);
  // Removing the best falls back to the other.
  const r = rib.remove("ipv4-unicast", "10.1.0.0/24", "10.0.0.2");
  assert.equal(r?.after?.source.id, "10.0.0.1");
  assert.deepEqual(rib.remove("ipv4-unicast", "10.1.0.0/24", "10.0.0.1")?.after, undefined);
  assert.equal(rib.size("ipv4-unicast"), 0);
  assert.equal(rib.remove("ipv4-unicast", "10.1.0.0/24", "10.0.0.1"), undefined);
});
