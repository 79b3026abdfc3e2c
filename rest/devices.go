package rest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/store"
)

// Command timeouts: the default of ?timeout= and its ceiling.
const (
	DefaultCommandTimeout = 10 * time.Second
	MaxCommandTimeout     = 5 * time.Minute
)

// deviceRequest is the body of POST /api/v1/devices.
type deviceRequest struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Protocol string            `json:"protocol"`
	Metadata map[string]string `json:"metadata"`
	// Password creates the device's login (MQTT username = id).
	Password string `json:"password"`
	// PSK is the hex DTLS pre-shared key of a CoAP device.
	PSK string `json:"psk"`
	// Commands declares the commands the device takes.
	Commands []devices.Command `json:"commands"`
}

// devicePatch is the body of PATCH /api/v1/devices/{id}.
type devicePatch struct {
	Name     *string           `json:"name"`
	Protocol *string           `json:"protocol"`
	Metadata map[string]string `json:"metadata"`
	Password *string           `json:"password"`
	PSK      *string           `json:"psk"`
}

func parsePSK(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, badRequest("psk: must be hex: %v", err)
	}
	return b, nil
}

func (a *Adapter) listDevices(c *gin.Context) {
	pg, err := parsePage(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	ds, err := a.cfg.Devices.List(c.Request.Context())
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, paginate(c, pg, ds, func(d store.Device) string { return d.ID }))
}

func (a *Adapter) addDevice(c *gin.Context) {
	var req deviceRequest
	if err := decodeJSON(c.Request.Body, &req); err != nil {
		a.fail(c, err)
		return
	}
	if req.ID == "" {
		a.fail(c, badRequest("id: required"))
		return
	}
	d := store.Device{ID: req.ID, Name: req.Name, Protocol: req.Protocol, Metadata: req.Metadata}
	if req.PSK != "" {
		psk, err := parsePSK(req.PSK)
		if err != nil {
			a.fail(c, err)
			return
		}
		d.PSK = psk
	}
	if err := devices.ValidateCommands(req.Commands); err != nil {
		a.fail(c, err)
		return
	}
	ctx := c.Request.Context()
	if err := a.cfg.Devices.Add(ctx, d, req.Password); err != nil {
		a.fail(c, err)
		return
	}
	if len(req.Commands) > 0 {
		if err := a.cfg.Devices.SetCommands(ctx, req.ID, req.Commands); err != nil {
			a.fail(c, err)
			return
		}
	}
	got, err := a.cfg.Devices.Get(ctx, req.ID)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.Header("Location", "/api/v1/devices/"+got.ID)
	c.JSON(http.StatusCreated, got)
}

func (a *Adapter) getDevice(c *gin.Context) {
	d, err := a.cfg.Devices.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

func (a *Adapter) patchDevice(c *gin.Context) {
	var req devicePatch
	if err := decodeJSON(c.Request.Body, &req); err != nil {
		a.fail(c, err)
		return
	}
	p := devices.Patch{Name: req.Name, Protocol: req.Protocol, Metadata: req.Metadata, Password: req.Password}
	if req.PSK != nil {
		psk, err := parsePSK(*req.PSK)
		if err != nil {
			a.fail(c, err)
			return
		}
		p.PSK = psk
	}
	d, err := a.cfg.Devices.Update(c.Request.Context(), c.Param("id"), p)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

func (a *Adapter) deleteDevice(c *gin.Context) {
	if err := a.cfg.Devices.Delete(c.Request.Context(), c.Param("id")); err != nil {
		a.fail(c, err)
		return
	}
	a.cfg.Auth.Forget(c.Param("id"))
	a.revoke(c.Request.Context(), c.Param("id"))
	c.Status(http.StatusNoContent)
}

// parseTimeout reads ?timeout=: a Go duration ("5s", "1m") or seconds.
func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return DefaultCommandTimeout, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseFloat(s, 64)
		if nerr != nil {
			return 0, badRequest("timeout %q: must be a duration such as 5s or a number of seconds", trunc(s))
		}
		d = time.Duration(n * float64(time.Second))
	}
	if d <= 0 || d > MaxCommandTimeout {
		return 0, badRequest("timeout %q: must be above 0 and at most %v", trunc(s), MaxCommandTimeout)
	}
	return d, nil
}

// command handles POST /api/v1/devices/{id}/commands/{name}?timeout=: the
// body is the JSON params (empty: null), the answer is 200 with the
// device's reply as JSON, 404 for an unknown device, 503 at once for an
// offline one, 504 when the timeout passes. The caller needs a command
// rule for the device (adapters.ActionCommand; admins always may), else
// 403.
func (a *Adapter) command(c *gin.Context) {
	id, name := c.Param("id"), c.Param("name")
	timeout, err := parseTimeout(c.Query("timeout"))
	if err != nil {
		a.fail(c, err)
		return
	}
	if err := devices.ValidateID(id); err != nil {
		a.fail(c, fmt.Errorf("%w %q", devices.ErrUnknownDevice, trunc(id)))
		return
	}
	if err := devices.ValidateID(name); err != nil {
		a.fail(c, badRequest("command name %q: must be 1..128 letters, digits, '.', '_' or '-'", trunc(name)))
		return
	}
	ctx := c.Request.Context()
	if err := a.cfg.Auth.Authorize(ctx, principal(c), adapters.ActionCommand, id); err != nil {
		a.fail(c, err)
		return
	}
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		a.fail(c, fmt.Errorf("rest: read body: %w", err))
		return
	}
	params := json.RawMessage("null")
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeJSON(bytes.NewReader(body), &params); err != nil {
			a.fail(c, err)
			return
		}
	}
	a.sendCommand(c, id, name, params, timeout)
}

// sendCommand sends a command to device id and answers with its reply:
// 504 when none comes within timeout, the registry's errors otherwise.
func (a *Adapter) sendCommand(c *gin.Context, id, name string, params json.RawMessage, timeout time.Duration) {
	ctx := c.Request.Context()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := a.cfg.Devices.SendCommand(cctx, id, name, params)
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: no reply from %q within %v", context.DeadlineExceeded, id, timeout)
		}
		a.fail(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json", reply)
}
