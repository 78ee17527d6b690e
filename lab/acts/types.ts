/**
 * The contract between the demo runner and its acts: an act is a list of named steps; a step runs
 * commands against the lab through a DemoContext (which prints each command and what it saw) and states
 * expectations.
 */
import type { LabState } from "../state.ts";

/** An expectation did not hold; the step stops there. */
export class ExpectationFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExpectationFailed";
  }
}

export interface DemoContext {
  state: LabState;
  /** Prints a narration line. */
  say(line: string): void;
  /** Runs kubectl (printing `$ kubectl …` and its output unless quiet); throws if it fails. */
  kubectl(args: string[], opts?: { stdin?: string; quiet?: boolean }): Promise<string>;
  /** Runs a command in a pod (`ns/name`) or machine (`kube-node1`); returns stdout, or throws. */
  exec(
    target: string,
    cmd: string[],
    opts?: { quiet?: boolean; check?: boolean },
  ): Promise<{ code: number; stdout: string }>;
  /** Records an expectation; a false one fails the step. */
  expect(ok: boolean, what: string, detail?: string): void;
  /** Polls until `fn` returns true (or times out, which fails the expectation `what`). */
  eventually(what: string, fn: () => Promise<boolean>, timeoutMs?: number): Promise<void>;
}

export interface Step {
  name: string;
  run(ctx: DemoContext): Promise<void>;
}

export interface Act {
  name: string;
  /** What the seed's asciicast shows here, in a sentence. */
  story: string;
  /** The act shows what the agents do; it is skipped (and says so) in a lab without agents. */
  needsAgents?: boolean;
  /** Fewest nodes the act needs (default 1); skipped, and says so, in a smaller lab. */
  minNodes?: number;
  steps: Step[];
}
