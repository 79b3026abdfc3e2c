package rest

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/devices"
)

// commandsBody is the body of PUT /api/v1/devices/{id}/commands: the
// declaration as a JSON array, or an object {"commands": [...]}.
type commandsBody = []devices.Command

// listCommands handles GET /api/v1/devices/{id}/commands: the commands
// the device takes (declared for it, else announced by it), for whoever
// may command it.
func (a *Adapter) listCommands(c *gin.Context) {
	id := c.Param("id")
	ctx := c.Request.Context()
	if err := devices.ValidateID(id); err != nil {
		a.fail(c, fmt.Errorf("%w %q", devices.ErrUnknownDevice, trunc(id)))
		return
	}
	if err := a.cfg.Auth.Authorize(ctx, principal(c), adapters.ActionCommand, id); err != nil {
		a.fail(c, err)
		return
	}
	cs, err := a.cfg.Devices.Commands(ctx, id)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, commandsBody(cs))
}

// putCommands handles PUT /api/v1/devices/{id}/commands (admins): it
// replaces the device's declared commands; [] clears them.
func (a *Adapter) putCommands(c *gin.Context) {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		a.fail(c, fmt.Errorf("rest: read body: %w", err))
		return
	}
	cs, err := devices.ParseCommands(body)
	if err != nil {
		a.fail(c, err)
		return
	}
	if err := a.cfg.Devices.SetCommands(c.Request.Context(), c.Param("id"), cs); err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, commandsBody(cs))
}

// refusalStatus is the status of a device's refusal (see
// devices.RefusedError.HTTPStatus).
func refusalStatus(err error) (int, bool) {
	var re *devices.RefusedError
	if errors.As(err, &re) {
		return re.HTTPStatus(), true
	}
	return 0, false
}
