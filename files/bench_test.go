package files

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// BenchmarkPut measures Put of a 1 MiB file: hashing, writing and syncing
// the temporary file, placing the blob, the metadata transaction and the
// retained descriptor. New content each time (no dedup).
func BenchmarkPut(b *testing.B) {
	e := newEnv(b, nil)
	body := bytes.Repeat([]byte("x"), 1<<20)
	b.SetBytes(int64(len(body)))
	for i := 0; b.Loop(); i++ {
		copy(body, fmt.Sprintf("%016d", i))
		if _, err := e.fs.Put(context.Background(), fmt.Sprintf("bench/%d", i%8), bytes.NewReader(body), PutOptions{Size: -1}); err != nil {
			b.Fatal(err)
		}
	}
}
