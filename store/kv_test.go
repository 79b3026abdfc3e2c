package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestKV(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	puts := []struct {
		bucket, key string
		value       []byte
	}{
		{"clients", "b", []byte("2")},
		{"clients", "a", []byte("1")},
		{"clients", "c", nil},
		{"subs", "a", []byte("other bucket")},
		{"clients", "b", []byte("2 again")}, // overwrite
	}
	for _, p := range puts {
		if err := s.KVPut(ctx, p.bucket, p.key, p.value); err != nil {
			t.Fatalf("KVPut(%s, %s): %v", p.bucket, p.key, err)
		}
	}
	for _, tc := range []struct {
		bucket, key string
		want        []byte
		err         error
	}{
		{"clients", "a", []byte("1"), nil},
		{"clients", "b", []byte("2 again"), nil},
		{"clients", "c", []byte{}, nil},
		{"subs", "a", []byte("other bucket"), nil},
		{"subs", "b", nil, ErrNotFound},
		{"none", "a", nil, ErrNotFound},
	} {
		got, err := s.KVGet(ctx, tc.bucket, tc.key)
		if !errors.Is(err, tc.err) || !bytes.Equal(got, tc.want) {
			t.Errorf("KVGet(%s, %s) = %q, %v; want %q, %v", tc.bucket, tc.key, got, err, tc.want, tc.err)
		}
	}
	list, err := s.KVList(ctx, "clients")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Key != "a" || list[1].Key != "b" || list[2].Key != "c" ||
		string(list[1].Value) != "2 again" {
		t.Errorf("KVList = %+v", list)
	}
	if err := s.KVDelete(ctx, "clients", "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.KVDelete(ctx, "clients", "a"); err != nil {
		t.Errorf("KVDelete of an absent key: %v", err)
	}
	if _, err := s.KVGet(ctx, "clients", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("KVGet after delete = %v", err)
	}
	if err := s.KVDeleteBucket(ctx, "clients"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.KVList(ctx, "clients"); len(list) != 0 {
		t.Errorf("KVList after KVDeleteBucket = %+v", list)
	}
	if list, _ := s.KVList(ctx, "subs"); len(list) != 1 {
		t.Errorf("KVDeleteBucket touched another bucket: %+v", list)
	}
	if err := s.KVPut(ctx, "", "k", nil); !errors.Is(err, ErrInvalidBucket) {
		t.Errorf("KVPut with empty bucket = %v, want ErrInvalidBucket", err)
	}
}

func TestKVApply(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	if err := s.KVPut(ctx, "b", "old", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ops := []KVOp{
		{Bucket: "b", Key: "k1", Value: []byte("1")},
		{Bucket: "b", Key: "k2", Value: []byte("2")},
		{Bucket: "b", Key: "k1", Value: []byte("1 again")}, // later wins
		{Bucket: "b", Key: "old", Delete: true},
		{Bucket: "b", Key: "absent", Delete: true}, // no error
	}
	if err := s.KVApply(ctx, ops); err != nil {
		t.Fatal(err)
	}
	got, err := s.KVList(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "k1" || string(got[0].Value) != "1 again" || got[1].Key != "k2" {
		t.Fatalf("after apply: %+v", got)
	}
	// All or nothing: an invalid change leaves everything as it was.
	err = s.KVApply(ctx, []KVOp{{Bucket: "b", Key: "k3", Value: []byte("3")}, {Key: "no bucket"}})
	if !errors.Is(err, ErrInvalidBucket) {
		t.Fatalf("apply with an empty bucket: %v, want ErrInvalidBucket", err)
	}
	if _, err := s.KVGet(ctx, "b", "k3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("k3 after a refused apply: %v, want ErrNotFound", err)
	}
	if err := s.KVApply(ctx, nil); err != nil {
		t.Fatalf("empty apply: %v", err)
	}
}
