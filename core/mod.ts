/**
 * @module
 * The runtime every module shares: configuration, the event bus, the sync runner, health and metrics,
 * logging, the clock, the one reading of Services and EndpointSlices, and the agent that ties them
 * together.
 */
export * from "./agent.ts";
export * from "./bus.ts";
export * from "./change_tracker.ts";
export * from "./clock.ts";
export * from "./config.ts";
export * from "./health.ts";
export * from "./http.ts";
export * from "./label_selector.ts";
export * from "./log.ts";
export * from "./memory.ts";
export * from "./metrics.ts";
export type * from "./module.ts";
export * from "./netfilter.ts";
export * from "./runner.ts";
export * from "./service_model.ts";
export * from "./v8_flags.ts";
