//! The uplink: the interface of the IPv4 default route.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader};

use super::{LinkError, Netlink};

impl Netlink {
    /// Returns the name of the interface that carries the IPv4 default
    /// route of the main table. With several default routes, the one with
    /// the lowest metric wins, as it does for the kernel.
    pub async fn default_route_interface(&self) -> Result<String, LinkError> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle().route().get(request).execute();
        let mut best: Option<(u32, u32)> = None;
        while let Some(route) = routes.try_next().await.map_err(LinkError::ListRoutes)? {
            if route.header.destination_prefix_length != 0 {
                continue;
            }
            let mut table = u32::from(route.header.table);
            let mut output = None;
            let mut metric = 0;
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Table(value) => table = *value,
                    RouteAttribute::Oif(index) => output = Some(*index),
                    RouteAttribute::Priority(value) => metric = *value,
                    _ => {}
                }
            }
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
                continue;
            }
            if let Some(index) = output
                && best.is_none_or(|(best_metric, _)| metric < best_metric)
            {
                best = Some((metric, index));
            }
        }
        let (_, index) = best.ok_or(LinkError::NoDefaultRoute)?;
        let link = self
            .find_link_by_index(index)
            .await?
            .ok_or(LinkError::UplinkMissing { index })?;
        Ok(link.name)
    }
}
