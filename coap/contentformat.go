package coap

import (
	"mime"
	"strings"
)

// contentFormats maps CoAP Content-Format numbers (IANA "CoAP
// Content-Formats" registry) to the MIME types the envelope carries. Each
// MIME type appears once, so the mapping is one-to-one.
var contentFormats = map[uint16]string{
	0:     "text/plain;charset=utf-8",
	40:    "application/link-format",
	41:    "application/xml",
	42:    "application/octet-stream",
	47:    "application/exi",
	50:    "application/json",
	51:    "application/json-patch+json",
	52:    "application/merge-patch+json",
	60:    "application/cbor",
	61:    "application/cwt",
	62:    "application/multipart-core",
	63:    "application/cbor-seq",
	110:   "application/senml+json",
	111:   "application/sensml+json",
	112:   "application/senml+cbor",
	113:   "application/sensml+cbor",
	114:   "application/senml-exi",
	115:   "application/sensml-exi",
	256:   "application/coap-group+json",
	310:   "application/senml+xml",
	311:   "application/sensml+xml",
	432:   "application/td+json",
	10000: "application/vnd.ocf+cbor",
	11542: "application/vnd.oma.lwm2m+tlv",
	11543: "application/vnd.oma.lwm2m+json",
	11544: "application/vnd.oma.lwm2m+cbor",
}

// mimeFormats is the inverse of contentFormats keyed by bare media type.
var mimeFormats = func() map[string]uint16 {
	m := make(map[string]uint16, len(contentFormats))
	for cf, t := range contentFormats {
		mt, _, _ := strings.Cut(t, ";")
		m[mt] = cf
	}
	return m
}()

// MIMEType returns the MIME type of a CoAP Content-Format number, and false
// for a number the hub does not know.
func MIMEType(cf uint16) (string, bool) {
	t, ok := contentFormats[cf]
	return t, ok
}

// ContentFormat returns the CoAP Content-Format number of a MIME type, and
// false when there is none. Case and spacing do not matter; a charset
// parameter is accepted when it is UTF-8 (the only one CoAP text formats
// use), and any other parameter makes the type unknown.
func ContentFormat(mimeType string) (uint16, bool) {
	mt, params, err := mime.ParseMediaType(mimeType)
	if err != nil {
		return 0, false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return 0, false
		}
	}
	cf, ok := mimeFormats[mt]
	return cf, ok
}
