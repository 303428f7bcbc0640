/* stub: being written */
#include "autoconfig.h"
extern int listener_stub_;
int listener_stub_;
