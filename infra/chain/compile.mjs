// Compile the demo contracts with solc-js (standard JSON) so the demo chain needs no
// native toolchain. Usage: node compile.mjs OUT.json
// Writes {ContractName: {abi, bytecode}} for every contract defined in contracts/*.sol.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import solc from 'solc'

const here = dirname(fileURLToPath(import.meta.url))
const contractsDir = join(here, 'contracts')
const nodeModules = join(here, 'node_modules')

const out = process.argv[2]
if (!out) {
  console.error('usage: node compile.mjs OUT.json')
  process.exit(2)
}

const sources = {}
for (const name of readdirSync(contractsDir).filter((n) => n.endsWith('.sol')).sort()) {
  sources[name] = { content: readFileSync(join(contractsDir, name), 'utf8') }
}

// Imports resolve only inside node_modules/@openzeppelin, never elsewhere on disk.
function findImports(path) {
  const file = resolve(nodeModules, path)
  if (!file.startsWith(join(nodeModules, '@openzeppelin') + sep)) {
    return { error: `import outside @openzeppelin: ${path}` }
  }
  try {
    return { contents: readFileSync(file, 'utf8') }
  } catch (e) {
    return { error: `cannot read ${path}: ${e.message}` }
  }
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    evmVersion: 'cancun',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }))
const errors = (output.errors ?? []).filter((e) => e.severity === 'error')
for (const e of output.errors ?? []) console.error(e.formattedMessage)
if (errors.length > 0) process.exit(1)

const artifacts = {}
for (const name of Object.keys(sources)) {
  for (const [contract, c] of Object.entries(output.contracts[name] ?? {})) {
    artifacts[contract] = { abi: c.abi, bytecode: '0x' + c.evm.bytecode.object }
  }
}
writeFileSync(out, JSON.stringify(artifacts))
console.log(`compiled ${Object.keys(artifacts).join(', ')} with solc ${solc.version()}`)
