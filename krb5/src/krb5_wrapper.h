#include <krb5.h>
