// Plugin folders in the seed's layout (plugins/<id>/manifest.json,
// main.py, valves.json), for the plugin tests.
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir } from './harness.mjs';

/** Writes a plugins directory in the seed's layout; returns its path. */
export function writePluginsDir(dir, secret) {
  const root = path.join(dir, 'plugins');
  const put = (id, files) => {
    fs.mkdirSync(path.join(root, id), { recursive: true });
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(root, id, name), text);
  };
  put('content-filter', {
    'manifest.json': JSON.stringify({ name: 'Content filter', version: '1.0.0', type: 'filter', entry: 'main.py' }),
    // A real filter (it runs once enabled): it stamps its threshold valve
    // on each request, so a test can see which code and valves ran.
    'main.py': [
      'from pydantic import BaseModel',
      '',
      '',
      'class Filter:',
      '    class Valves(BaseModel):',
      '        api_token: str = ""',
      '        threshold: float = 0.5',
      '        words: list = []',
      '        nested: dict = {}',
      '',
      '    def __init__(self):',
      '        self.valves = self.Valves()',
      '',
      '    def inlet(self, body, __user__=None):',
      '        body["eldric_threshold"] = self.valves.threshold',
      '        return body',
      '',
    ].join('\n'),
    'valves.json': JSON.stringify({ api_token: secret, threshold: 0.5 }),
  });
  put('my-tool', {
    'manifest.json': JSON.stringify({ name: 'My tool', version: '0.2.0', type: 'tool', entry: 'main.py', enabled: true }),
  });
  // Skipped with a warning: not JSON, an unknown type.
  put('broken', { 'manifest.json': '{"name": "broken", ' });
  put('odd-type', { 'manifest.json': JSON.stringify({ name: 'Odd', type: 'daemon' }) });
  // Not a plugin at all (no manifest): ignored.
  put('notes', { 'README.txt': 'not a plugin' });
  return root;
}

/** Writes a plugin folder (manifest, main.py, valves.json). */
export function writePlugin(root, id, manifest, code, valves) {
  const d = path.join(root, id);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'manifest.json'), JSON.stringify({ name: id, version: '1.0.0', entry: 'main.py', ...manifest }));
  fs.writeFileSync(path.join(d, 'main.py'), code);
  if (valves) fs.writeFileSync(path.join(d, 'valves.json'), JSON.stringify(valves));
}

/**
 * A temp dir the plugins' user (nobody) can traverse: bubblewrap, started
 * as nobody, binds the code and data folders under it. The Edge refuses a
 * runtime dir that others may write; this one is 0711 and root's.
 */
export function pluginsTempDir(prefix) {
  const dir = makeTempDir(prefix);
  fs.chmodSync(dir, 0o711);
  const plugins = path.join(dir, 'plugins');
  fs.mkdirSync(plugins);
  return { dir, plugins, runtime: path.join(dir, 'runtime'), data: path.join(dir, 'store') };
}
