// A plugins directory in the seed's layout (plugins/<id>/manifest.json,
// main.py, valves.json), for the plugin endpoint tests.
import fs from 'node:fs';
import path from 'node:path';

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

