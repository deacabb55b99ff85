/**
 * The Effect 4 conformance suite (test/conformance/cases.ts) against pg-warden's Effect 4 edition: every case must
 * pass.
 */
import { describe, inject, it } from "@effect/vitest"
import * as Redacted from "effect/Redacted"
import * as WardenClient from "../src/WardenClient.js"
import { type Contender, cases, runCase, testName } from "./conformance/cases.js"
import "./context.js"

const url = inject("databaseUrl")

const warden: Contender = {
  name: "warden",
  layer: (url, app, options) =>
    WardenClient.layer({
      url: Redacted.make(url),
      applicationName: app,
      maxConnections: options.maxConnections,
      acquireTimeout: options.acquireTimeoutMs
    })
}

describe("conformance (Effect 4): pg-warden", () => {
  for (const testCase of cases) {
    it.live(testName(testCase), () => runCase(testCase, warden, url), 60_000)
  }
})
