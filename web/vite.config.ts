import { defineConfig } from 'vite';

// The build goes to ../dashboard/dist, which the Go package dashboard
// embeds; stamp.mjs then writes dist/stamp.txt (a hash of these sources)
// so that a Go test can tell when the committed build is stale.
export default defineConfig({
  base: '/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: '../dashboard/dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    modulePreload: { polyfill: false },
    rolldownOptions: {
      input: { index: 'index.html', login: 'login.html' },
    },
  },
});
