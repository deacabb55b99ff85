// Minimal typing of the parts of pg-cursor pg-warden uses.
declare module "pg-cursor" {
  export default class Cursor {
    constructor(text: string, values?: ReadonlyArray<unknown>, config?: { rowMode?: "array"; types?: unknown })
    read(rows: number, callback: (error: Error | undefined, rows: Array<any>) => void): void
    close(callback: (error?: Error) => void): void
  }
}
