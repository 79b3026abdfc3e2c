package rest

import (
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// reloadResponse is the body of a done POST /api/v1/admin/reload.
type reloadResponse struct {
	// Changes says what the reload changed, one line each (empty:
	// nothing did).
	Changes []string `json:"changes"`
}

// reload handles POST /api/v1/admin/reload (admin): the configuration file
// is read again and what can change without dropping clients is applied,
// as SIGHUP does.
func (a *Adapter) reload(c *gin.Context) {
	if a.cfg.Reload == nil {
		a.fail(c, fmt.Errorf("%w: this hub has no configuration to reload", errNotFound))
		return
	}
	changes, err := a.cfg.Reload(c.Request.Context())
	if err != nil {
		a.fail(c, badRequest("%v", err))
		return
	}
	if changes == nil {
		changes = []string{}
	}
	c.JSON(http.StatusOK, reloadResponse{Changes: changes})
}
