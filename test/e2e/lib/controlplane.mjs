// Starting eldric-controlplane for the farm suites (and the control-plane
// benchmark): a config file in a temp dir, --listen on a given port, ready
// once the port accepts.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN_DIR, makeTempDir, removeDir, waitFor, portOpen } from './harness.mjs';

export const CP_BIN = path.join(BIN_DIR, 'controlplane/eldric-controlplane');
export const CTL_BIN = path.join(BIN_DIR, 'controlplane/eldricctl');

/**
 * Starts a control plane; resolves {proc, stderr(), kill(), stop()}.
 * `syncMs` sets --sync-interval-ms (omitted: the config file's).
 */
export async function startControlPlane({ port, dataDir, config, extraArgs = [], syncMs }) {
  const dir = makeTempDir('eldric-cp-config-');
  const file = path.join(dir, 'cp.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const args = ['--listen', `127.0.0.1:${port}`, '--config', file, '--data-dir', dataDir,
    ...(syncMs ? ['--sync-interval-ms', String(syncMs)] : []), ...extraArgs];
  const proc = spawn(CP_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => (err += d));
  proc.stdout.on('data', () => {});
  await waitFor(() => portOpen(port), { timeoutMs: 10000, what: `control plane on ${port}; stderr: ${err}` });
  const exited = () => new Promise((r) => (proc.exitCode !== null || proc.signalCode ? r() : proc.once('exit', r)));
  return {
    proc,
    stderr: () => err,
    kill: async () => {
      proc.kill('SIGKILL');
      await exited();
      removeDir(dir);
    },
    stop: async () => {
      proc.kill('SIGTERM');
      await exited();
      removeDir(dir);
    },
  };
}
