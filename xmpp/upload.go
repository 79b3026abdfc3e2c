package xmpp

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/hubsmith/hub/files"
)

// XEP-0363 HTTP File Upload at upload.{domain}: a slot request gets a PUT
// URL on the hub's HTTP listener (unguessable, good once, for that size
// and type) and the GET URL the file is then fetched from. The file is
// named "uploads/{user}/{random}/{filename}"; its descriptor is retained
// on files/uploads/{user}/{random}/{filename} once the PUT completes, and
// the uploader needs the publish right on that topic.
const nsUpload = "urn:xmpp:http:upload:0"

func (a *Adapter) uploadDomain() string { return "upload." + a.cfg.Domain }

// uploadForm is the XEP-0128 extension of upload.{domain}'s disco info
// announcing the size limit (XEP-0363 §3).
func (a *Adapter) uploadForm() *element {
	x := newElement(nsData, "x", "type", "result").Add(
		newElement(nsData, "field", "var", "FORM_TYPE", "type", "hidden").Add(newElement(nsData, "value").AddText(nsUpload)))
	if a.maxFileSize() > 0 {
		x.Add(newElement(nsData, "field", "var", "max-file-size").Add(
			newElement(nsData, "value").AddText(strconv.FormatInt(a.maxFileSize(), 10))))
	}
	return x
}

// fileTooLarge is the error answer of XEP-0363 §4.1 for a file over the
// limit.
func (a *Adapter) fileTooLarge(iq *element, size int64) *element {
	r := errorText(iq, "modify", "not-acceptable", fmt.Sprintf("file of %d bytes is over the limit of %d", size, a.maxFileSize()))
	if e := r.Child(nsClient, "error"); e != nil {
		ftl := newElement(nsUpload, "file-too-large")
		if a.maxFileSize() > 0 {
			ftl.Add(newElement(nsUpload, "max-file-size").AddText(strconv.FormatInt(a.maxFileSize(), 10)))
		}
		e.Add(ftl)
	}
	return r
}

// handleUpload answers iqs to upload.{domain}: disco and slot requests.
func (a *Adapter) handleUpload(p peer, iq *element) {
	typ := iq.AttrValue("type")
	if iq.Name.Local != "iq" || typ == "result" || typ == "error" {
		return
	}
	req := iq.Child(nsUpload, "request")
	if req == nil {
		a.handleServiceIQ(p, iq, "upload")
		return
	}
	if typ != "get" {
		_ = p.send(errorReply(iq, "modify", "bad-request"))
		return
	}
	bare := iq
	filename, ctype := req.AttrValue("filename"), req.AttrValue("content-type")
	size, err := strconv.ParseInt(req.AttrValue("size"), 10, 64)
	if err != nil || size < 0 {
		_ = p.send(errorText(bare, "modify", "bad-request", fmt.Sprintf("size %q: want a number of bytes", req.AttrValue("size"))))
		return
	}
	filename, ok := baseFileName(filename)
	if !ok {
		_ = p.send(errorText(bare, "modify", "bad-request", fmt.Sprintf("file name %q is not usable", req.AttrValue("filename"))))
		return
	}
	if a.maxFileSize() > 0 && size > a.maxFileSize() {
		_ = p.send(a.fileTooLarge(bare, size))
		return
	}
	pr := p.principal()
	ctx := context.WithoutCancel(a.ctx)
	name := "uploads/" + pr.Name + "/" + randomID()[:16] + "/" + filename
	if err := a.mayWrite(ctx, p, name); err != nil {
		etype, cond := "wait", "internal-server-error"
		var se *siError
		if errors.As(err, &se) {
			etype, cond = se.etype, se.cond
		}
		_ = p.send(errorText(bare, etype, cond, err.Error()))
		return
	}
	slot, err := a.cfg.Files.NewSlot(ctx, files.SlotOptions{Name: name, Size: size, ContentType: ctype, Uploader: pr.Name})
	if err != nil {
		a.log.Info("xmpp: upload slot refused", "jid", p.fullJID(), "name", name, "size", size, "err", err)
		if errors.Is(err, files.ErrTooLarge) {
			_ = p.send(a.fileTooLarge(bare, size))
			return
		}
		etype, cond := storeCondition(err)
		_ = p.send(errorText(bare, etype, cond, err.Error()))
		return
	}
	put := newElement(nsUpload, "put", "url", slot.PutURL)
	keys := make([]string, 0, len(slot.Header))
	for k := range slot.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// XEP-0363 §5 allows only these headers in a slot.
		switch k {
		case "Authorization", "Cookie", "Expires":
			put.Add(newElement(nsUpload, "header", "name", k).AddText(slot.Header[k]))
		}
	}
	_ = p.send(resultOf(iq).Add(newElement(nsUpload, "slot").Add(put, newElement(nsUpload, "get", "url", slot.GetURL))))
}
