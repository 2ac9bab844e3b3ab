// /proc/PID/stat and /proc/self/task/TID/stat: the fields after the command
// name, which may itself hold spaces and parentheses (so split after the last
// ")"). Index 0 is the state (field 3 of proc(5)), 11 and 12 are utime and
// stime (fields 14 and 15, in USER_HZ: 100 per second).

import { readFileSync } from 'node:fs';

export const STAT_STATE = 0;
export const STAT_UTIME = 11;
export const STAT_STIME = 12;
/** USER_HZ, the unit of utime and stime (100 on Linux, whatever the kernel's HZ). */
export const USER_HZ = 100;

/** The stat file's fields from the state on; null when it cannot be read (the process or thread is gone). */
export function statFields(path: string): string[] | null {
  let st: string;
  try {
    st = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  return st.slice(st.lastIndexOf(')') + 2).split(' ');
}
