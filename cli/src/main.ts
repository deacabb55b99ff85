#!/usr/bin/env node
/**
 * The `pg-warden` command line: `pg-warden check` verifies a database path, `pg-warden demo` shows
 * the promise side by side with `@effect/sql-pg`.
 *
 * Exit codes: 0 success; 1 `check` ran and a line failed; 2 the command could not do its job (bad
 * arguments or URL, unreachable server, refused credentials, insufficient privileges); 130 interrupted.
 *
 * @since 0.1.0
 */
import { createRequire } from "node:module"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import { CheckFailed, check } from "./check.js"
import { demo } from "./demo.js"
import { CliError } from "./server.js"

const version = (() => {
  try {
    return (createRequire(import.meta.url)("../package.json") as { version: string }).version
  } catch {
    return "0.0.0"
  }
})()

const url = Options.text("url").pipe(
  Options.withDescription(
    "The database, as postgres://user:password@host:port/database (default: the DATABASE_URL environment variable)"
  ),
  Options.optional
)

const json = Options.boolean("json").pipe(Options.withDescription("Print the result as JSON on stdout"))

const resolveUrl = (option: Option.Option<string>): string | undefined =>
  Option.getOrElse(option, () => process.env.DATABASE_URL)

const positive = (name: string, value: number, min: number, max: number) =>
  value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(new CliError({ kind: "usage", message: `--${name} must be between ${min} and ${max}, got ${value}` }))

const checkCommand = Command.make(
  "check",
  {
    url,
    json,
    storm: Options.integer("storm").pipe(
      Options.withDescription("Seconds of the interruption storm (1–30)"),
      Options.withDefault(3)
    ),
    timeout: Options.integer("timeout").pipe(
      Options.withDescription("Seconds the whole check may take before it counts as failed (10–600)"),
      Options.withDefault(60)
    )
  },
  (options) =>
    Effect.gen(function* () {
      const stormSeconds = yield* positive("storm", options.storm, 1, 30)
      const timeoutSeconds = yield* positive("timeout", options.timeout, 10, 600)
      yield* check({
        url: resolveUrl(options.url),
        json: options.json,
        stormMs: stormSeconds * 1_000,
        timeoutMs: timeoutSeconds * 1_000
      })
    })
).pipe(
  Command.withDescription(
    "Run a bounded, non-destructive conformance run against your database: cancel round trip, interruption mid-statement and mid-transaction, a short interruption storm, and the server settings that matter. Uses a unique application_name and one temporary table. Exit code 1 when a check fails, 2 when it cannot run."
  )
)

const demoCommand = Command.make(
  "demo",
  {
    url,
    json,
    duration: Options.integer("duration").pipe(
      Options.withDescription("About how many seconds the demo takes (10–600)"),
      Options.withDefault(60)
    )
  },
  (options) =>
    Effect.gen(function* () {
      const seconds = yield* positive("duration", options.duration, 10, 600)
      yield* demo({ url: resolveUrl(options.url), durationMs: seconds * 1_000, json: options.json })
    })
).pipe(
  Command.withDescription(
    "Interrupt fibers on a real server, side by side: @effect/sql-pg (PgClient.layer, defaults) and pg-warden, for Effect 3 and (from the repository) Effect 4. Runs the asyncpg reproduction, an interruption storm, saturation, a network blackhole during an idle transaction and a Layer closed under daemon transactions, then prints interruption latency, collateral failures and what pg_stat_activity showed afterwards. `npm start` runs it on an embedded server."
  )
)

const root = Command.make("pg-warden", {}, () =>
  Effect.suspend(() => cli([...process.argv.slice(0, 2), "--help"]))
).pipe(
  Command.withDescription("A PostgreSQL connection never outlives its scope."),
  Command.withSubcommands([checkCommand, demoCommand])
)

const cli: (args: ReadonlyArray<string>) => Effect.Effect<void, unknown, NodeContext.NodeContext> = Command.run(root, {
  name: "pg-warden",
  version
})

let exitCode = 0

const program = Effect.suspend(() => cli(process.argv)).pipe(
  Effect.catchAll((error) =>
    Effect.sync(() => {
      if (error instanceof CheckFailed) {
        exitCode = 1
      } else if (error instanceof CliError) {
        process.stderr.write(`pg-warden: ${error.message}\n`)
        exitCode = 2
      } else if (ValidationError.isValidationError(error)) {
        // @effect/cli has already printed what was wrong.
        exitCode = 2
      } else {
        process.stderr.write(`pg-warden: unexpected failure: ${String((error as Error)?.message ?? error)}\n`)
        exitCode = 2
      }
    })
  ),
  Effect.provide(NodeContext.layer)
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  teardown: (exit, _onExit) => {
    let code = exitCode
    if (Exit.isFailure(exit)) {
      if (Cause.isInterruptedOnly(exit.cause)) {
        process.stderr.write("\npg-warden: interrupted\n")
        code = 130
      } else {
        process.stderr.write(`pg-warden: ${Cause.pretty(exit.cause)}\n`)
        code = 1
      }
    }
    // Exit explicitly: a fiber of a contender that never ends must not keep the process alive.
    process.stdout.write("", () => process.exit(code))
  }
})
