// Command ledgerinterop checks Chaperone's ledger against Go's golang.org/x/mod/sumdb/note and
// sumdb/tlog, and makes notes and proofs with them for Chaperone to check.
//
// Build (offline, with Debian's golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o ledgerinterop ./tests/interop/ledgerinterop
//
// Both modes read one JSON object on stdin and write one on stdout:
//
//	ledgerinterop verify  {"vkey", "note", "entries", "inclusion": [{"index","size","proof"}], "consistency": [{"old","new","proof"}]}
//	  -> {"note_ok", "note_error", "origin", "size", "root", "roots_match", "inclusion": [ok...], "consistency": [ok...]}
//	ledgerinterop make    {"name", "entries", "inclusion": [{"index","size"}], "consistency": [{"old","new"}]}
//	  -> {"vkey", "note", "roots": {"<size>": b64}, "inclusion": [{"index","size","proof"}], "consistency": [{"old","new","proof"}]}
//
// Tree sizes and roots come from the C2SP checkpoint text (origin, size, base64 root), which this
// program parses itself: sumdb/tlog.ParseTree reads the go.sum database's own header instead.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type proofItem struct {
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof []string `json:"proof"`
}

type request struct {
	Vkey        string      `json:"vkey"`
	Note        string      `json:"note"`
	Name        string      `json:"name"`
	Entries     []string    `json:"entries"`
	Inclusion   []proofItem `json:"inclusion"`
	Consistency []proofItem `json:"consistency"`
}

// memory is a tlog.HashReader over hashes kept in a slice.
type memory []tlog.Hash

func (m memory) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = m[x]
	}
	return out, nil
}

func build(entries []string) (memory, error) {
	var m memory
	for i, e := range entries {
		hashes, err := tlog.StoredHashes(int64(i), []byte(e), m)
		if err != nil {
			return nil, err
		}
		m = append(m, hashes...)
	}
	return m, nil
}

func decodeProof(lines []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(lines))
	for i, s := range lines {
		h, err := tlog.ParseHash(s)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

func encodeProof(p []tlog.Hash) []string {
	out := make([]string, len(p))
	for i, h := range p {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// parseCheckpoint reads a C2SP tlog-checkpoint text: origin, size, base64 root hash.
func parseCheckpoint(text string) (string, int64, tlog.Hash, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 || lines[0] == "" {
		return "", 0, tlog.Hash{}, fmt.Errorf("not a checkpoint")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return "", 0, tlog.Hash{}, fmt.Errorf("bad size")
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return "", 0, tlog.Hash{}, err
	}
	return lines[0], size, root, nil
}

func verify(req request) map[string]interface{} {
	out := map[string]interface{}{"note_ok": false}
	v, err := note.NewVerifier(req.Vkey)
	if err != nil {
		out["note_error"] = "verifier key: " + err.Error()
		return out
	}
	n, err := note.Open([]byte(req.Note), note.VerifierList(v))
	if err != nil {
		out["note_error"] = err.Error()
		return out
	}
	origin, size, root, err := parseCheckpoint(n.Text)
	if err != nil {
		out["note_error"] = err.Error()
		return out
	}
	out["note_ok"] = true
	out["origin"] = origin
	out["size"] = size
	out["root"] = base64.StdEncoding.EncodeToString(root[:])
	m, err := build(req.Entries)
	if err != nil {
		out["note_error"] = err.Error()
		return out
	}
	rootOf := func(size int64) (tlog.Hash, error) { return tlog.TreeHash(size, m) }
	if size <= int64(len(req.Entries)) && size > 0 {
		th, err := rootOf(size)
		out["roots_match"] = err == nil && th == root
	}
	var inc []bool
	for _, item := range req.Inclusion {
		p, err := decodeProof(item.Proof)
		th, err2 := rootOf(item.Size)
		ok := err == nil && err2 == nil && item.Index < int64(len(req.Entries)) &&
			tlog.CheckRecord(p, item.Size, th, item.Index, tlog.RecordHash([]byte(req.Entries[item.Index]))) == nil
		inc = append(inc, ok)
	}
	var con []bool
	for _, item := range req.Consistency {
		p, err := decodeProof(item.Proof)
		oh, err2 := rootOf(item.Old)
		nh, err3 := rootOf(item.New)
		ok := err == nil && err2 == nil && err3 == nil && tlog.CheckTree(p, item.New, nh, item.Old, oh) == nil
		con = append(con, ok)
	}
	out["inclusion"] = inc
	out["consistency"] = con
	return out
}

func make_(req request) (map[string]interface{}, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, req.Name)
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	m, err := build(req.Entries)
	if err != nil {
		return nil, err
	}
	size := int64(len(req.Entries))
	root, err := tlog.TreeHash(size, m)
	if err != nil {
		return nil, err
	}
	text := fmt.Sprintf("%s\n%d\n%s\n", req.Name, size, base64.StdEncoding.EncodeToString(root[:]))
	signed, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		return nil, err
	}
	roots := map[string]string{}
	for s := int64(1); s <= size; s++ {
		h, err := tlog.TreeHash(s, m)
		if err != nil {
			return nil, err
		}
		roots[strconv.FormatInt(s, 10)] = base64.StdEncoding.EncodeToString(h[:])
	}
	var inc []proofItem
	for _, item := range req.Inclusion {
		p, err := tlog.ProveRecord(item.Size, item.Index, m)
		if err != nil {
			return nil, err
		}
		inc = append(inc, proofItem{Index: item.Index, Size: item.Size, Proof: encodeProof(p)})
	}
	var con []proofItem
	for _, item := range req.Consistency {
		p, err := tlog.ProveTree(item.New, item.Old, m)
		if err != nil {
			return nil, err
		}
		con = append(con, proofItem{Old: item.Old, New: item.New, Proof: encodeProof(p)})
	}
	return map[string]interface{}{"vkey": vkey, "note": string(signed), "roots": roots,
		"inclusion": inc, "consistency": con}, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: ledgerinterop verify|make < request.json")
		os.Exit(2)
	}
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(2)
	}
	var out interface{}
	switch os.Args[1] {
	case "verify":
		out = verify(req)
	case "make":
		res, err := make_(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "make:", err)
			os.Exit(1)
		}
		out = res
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
