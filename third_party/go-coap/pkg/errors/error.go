package errors

import "errors"

var ErrKeyAlreadyExists = errors.New("key already exists")
