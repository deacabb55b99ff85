import { existsSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))

const readVersion = (file: string): string => String(JSON.parse(readFileSync(file, "utf8")).version)

/**
 * The installed version of a package, found in the nearest node_modules (packages such as
 * postgres.js do not export their package.json), or of the project itself when `root` is given.
 */
export const packageVersion = (name: string, root?: string): string => {
  try {
    if (root !== undefined) return readVersion(path.join(here, root, "package.json"))
    for (let dir = here; ; dir = path.dirname(dir)) {
      const file = path.join(dir, "node_modules", name, "package.json")
      if (existsSync(file)) return readVersion(file)
      if (path.dirname(dir) === dir) return "unknown"
    }
  } catch {
    return "unknown"
  }
}
