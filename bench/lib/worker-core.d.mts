/** Types of worker-core.mjs. */
import type { LoadAdapter } from "./driver.mjs"

export interface SetupArgs {
  readonly url: string
  readonly appName: string
  readonly poolSize: number
  /** Rows in bench_accounts: ids are 1..rows. */
  readonly rows: number
}

export interface CheckResult {
  readonly select1: unknown
  readonly row: unknown
  /** The transaction was run on this id (its balance must have grown by one). */
  readonly txId: number
}

export interface ContenderAdapter extends LoadAdapter {
  readonly name: string
  readonly versions: Readonly<Record<string, string>>
  setup(args: SetupArgs): Promise<void>
  /** select1, the row with id 42, and one transaction on id 7: the parent compares them. */
  check(): Promise<CheckResult>
  teardown(): Promise<void>
  /** Contender-specific numbers of the last run (for example, what happened to abandoned queries). */
  extra?(): unknown
  resetExtra?(): void
}

export declare const serve: (adapter: ContenderAdapter) => void
