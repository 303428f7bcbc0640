/* stub: being written */
#include "autoconfig.h"
extern int conn_stub_;
int conn_stub_;
