import { describe, inject, it } from "@effect/vitest"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Redacted from "effect/Redacted"
import { type Contender, cases, runCase, testName } from "./conformance/cases.js"
import "./support/context.js"

const url = inject("databaseUrl")

const sqlPg: Contender = {
  name: "sqlpg",
  layer: (url, app, options) =>
    PgClient.layer({ url: Redacted.make(url), applicationName: app, maxConnections: options.maxConnections })
}

export const EXPECTED_FAILURES: Readonly<Record<string, string>> = {}

describe("conformance: @effect/sql-pg 0.53 (baseline)", () => {
  for (const testCase of cases) {
    const test = testCase.id in EXPECTED_FAILURES ? it.live.fails : it.live
    test(testName(testCase), () => runCase(testCase, sqlPg, url), 40_000)
  }
})
