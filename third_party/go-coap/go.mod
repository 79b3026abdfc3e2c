module github.com/plgd-dev/go-coap/v3

go 1.26.0

require (
	github.com/dsnet/golib/memfile v1.0.0
	github.com/pion/dtls/v3 v3.1.15
	go.uber.org/atomic v1.12.0
	golang.org/x/exp v0.0.0-20261014143641-f0251eb4aa3e
	golang.org/x/net v0.62.0
	golang.org/x/sync v0.24.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/pion/logging v0.2.4 // indirect
	github.com/pion/transport/v5 v5.1.4 // indirect
	golang.org/x/crypto v0.58.0 // indirect
)
