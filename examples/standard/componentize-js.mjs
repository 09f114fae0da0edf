// Build driver for componentize-js (its `jco componentize` CLI fails here): run by examples/standard/build.py as
//   node componentize-js.mjs <node_modules dir> <source.js> <wit dir> <world> <output.wasm>
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, sourcePath, witPath, worldName, output] = process.argv.slice(2);
const entry = join(nodeModules, "@bytecodealliance", "componentize-js", "src", "componentize.js");
const { componentize } = await import(pathToFileURL(entry).href);
const { component } = await componentize({ sourcePath, witPath, worldName });
await writeFile(output, component);
