/* stub: being written */
#include "autoconfig.h"
extern int privdrop_stub_;
int privdrop_stub_;
