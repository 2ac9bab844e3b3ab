// A minimal typed event emitter (the core may not use Node's EventEmitter).

export class Emitter<Events extends Record<string, unknown>> {
  private readonly listeners: { [K in keyof Events]?: ((e: Events[K]) => void)[] } = {};

  on<K extends keyof Events>(name: K, fn: (e: Events[K]) => void): () => void {
    (this.listeners[name] ??= []).push(fn);
    return () => this.off(name, fn);
  }

  off<K extends keyof Events>(name: K, fn: (e: Events[K]) => void): void {
    const l = this.listeners[name];
    if (l === undefined) return;
    const i = l.indexOf(fn);
    if (i >= 0) l.splice(i, 1);
  }

  emit<K extends keyof Events>(name: K, event: Events[K]): void {
    const l = this.listeners[name];
    if (l === undefined) return;
    // A throwing listener must not break the data path or the other listeners.
    for (const fn of [...l]) {
      try {
        fn(event);
      } catch {
        // listeners are the control plane's business
      }
    }
  }
}
